# A Debian bookworm base with Python 3.11 (rootfs.tar, made by mmdebstrap from Debian's
# python3, python3-venv and python-is-python3): the PYTHON_IMAGE the project's Dockerfile is
# built on for the real node, in place of python:3.11-slim.
# Built by hack/node_images.py with the real buildkitd.
# ca-certificates.crt is the building machine's trust store, used by pip as on the host.
FROM scratch
ADD rootfs.tar /
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
