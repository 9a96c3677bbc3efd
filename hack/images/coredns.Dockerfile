# The cluster DNS of the real node's cluster: the static `coredns` of the pinned
# github.com/coredns/coredns module (hack/tools/coredns, with the plugins its main.go imports)
# and its Corefile, on nothing else. Built by hack/node_images.py with the real buildkitd.
FROM scratch
COPY coredns /coredns
COPY Corefile /etc/coredns/Corefile
EXPOSE 53 53/udp
ENTRYPOINT ["/coredns", "-conf", "/etc/coredns/Corefile"]
