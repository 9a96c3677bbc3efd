# The pod sandbox ("pause") image, as Kubernetes' build/pause makes it: the static pause
# binary compiled from build/pause/linux/pause.c of the pinned k8s.io/kubernetes module.
# Built by hack/node_images.py with the real buildkitd.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
