# The image registry of the real node's cluster: the static `registry` binary of the pinned
# github.com/distribution/distribution/v3 module (hack/tools/registry) and its configuration
# (registry-config.yml), on nothing else. Built by hack/node_images.py with the real buildkitd.
FROM scratch
COPY registry /bin/registry
COPY registry-config.yml /etc/distribution/config.yml
VOLUME /var/lib/registry
EXPOSE 5000
ENTRYPOINT ["/bin/registry"]
CMD ["serve", "/etc/distribution/config.yml"]
