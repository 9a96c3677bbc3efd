# The BuildKit images the operator runs by default, made here from Debian packages instead of
# pulled: docker.io/moby/buildkit:<version> (target rootful) and <version>-rootless (target
# rootless), laid out as upstream's images are (entrypoints, the rootless user and paths).
# rootfs.tar is a Debian bookworm made by mmdebstrap with runc, rootlesskit, uidmap and
# fuse-overlayfs; buildkitd and buildctl are the pinned builds of hack/tools/buildkit.
# Built by hack/node_images.py with the real buildkitd.

FROM scratch AS base
ADD rootfs.tar /
COPY buildkitd buildctl /usr/bin/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8

FROM base AS rootful
VOLUME /var/lib/buildkit
ENTRYPOINT ["buildkitd"]

FROM base AS rootless
# uid 1000 with a subordinate range for rootlesskit's user namespace, and the directories the
# rendered args use (socket under XDG_RUNTIME_DIR, state under ~/.local/share/buildkit).
# newuidmap/newgidmap with file capabilities instead of setuid root, as upstream's image has
# them: a setuid-root newuidmap cannot map uid 0 when the container's bounding set lacks
# CAP_SYS_ADMIN (the default for a pod), a capability-only one can.
RUN chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap \
    && setcap cap_setuid+ep /usr/bin/newuidmap \
    && setcap cap_setgid+ep /usr/bin/newgidmap \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/user --shell /bin/sh user \
    && echo user:100000:65536 > /etc/subuid \
    && echo user:100000:65536 > /etc/subgid \
    && mkdir -p /run/user/1000 /home/user/.local/tmp /home/user/.local/share/buildkit \
    && chown -R user:user /run/user/1000 /home/user \
    && chmod 0700 /run/user/1000
USER 1000:1000
ENV HOME=/home/user \
    USER=user \
    XDG_RUNTIME_DIR=/run/user/1000 \
    TMPDIR=/home/user/.local/tmp \
    BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock
VOLUME /home/user/.local/share/buildkit
ENTRYPOINT ["rootlesskit", "buildkitd"]
