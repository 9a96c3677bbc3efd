"""A real Kubernetes node joined to the local control plane; ``hack/node.py`` is its command
line (and the supervisor's entry point), and its docstring says what the node takes from the
machine and leaves it.

One concern per module (import each thing from where it lives):

- ``node``: LocalNode, its paths and lifecycle (start, stop, is_running)
- ``processes``: NodeState (state.json), the supervisor process, containerd's images, and
  the check of what a stopped node left behind
- ``supervise``: the supervisor, run inside the node's namespaces: mounts, daemons, stop
- ``netns``: the node's network namespace, and the forwarder to the host's API server
- ``objects``: what the node adds to the cluster: RBAC, the API server's endpoint, volumes
- ``config``: addresses, ports, names; the configuration files of CNI, containerd, kubelet
  and kube-proxy; the node's certificates and kubeconfigs
- ``binaries``: the pinned node binaries and the host's programs
"""
