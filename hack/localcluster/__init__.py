"""A real Kubernetes control plane on loopback; ``hack/cluster.py`` is its command line.

One concern per module (import each thing from where it lives):

- ``cluster``: LocalCluster, its paths, state and lifecycle (start, stop, is_running)
- ``processes``: spawning, finding, signalling and reaping the components; state.json
- ``faults``: restarting etcd or the API server, freezing the API server (chaos tests)
- ``objects``: what the cluster holds at start: nodes, StorageClasses, pool volumes;
  temporary namespaces
- ``config``: versions, address ranges, controllers, audit policy, components' arguments
- ``manifests``: the kwok nodes, StorageClasses and pool PersistentVolumes as objects
- ``pki``: CertificateAuthority, certificates and kubeconfigs
- ``binaries``: the pinned binaries, found in given directories or built
- ``api``: ClusterError and its kinds, wait_for, log, and Api (the REST client)
- ``kubectl``: Kubectl and KubectlError, the one kubectl helper of every test tier
"""
