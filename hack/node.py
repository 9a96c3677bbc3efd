#!/usr/bin/env python3
"""A real Kubernetes node joined to the local control plane (hack/cluster.py).

containerd, runc, kubelet and kube-proxy from the pinned Go modules under hack/tools/, the CNI
bridge plugins, and images made here by hack/node_images.py: the pods the
operator renders run for real, in containers.

What it takes from this machine, and what it leaves it:

- Network: a node IP cannot be loopback, so the node lives in a network namespace of its own
  (``bko-node-<id>``) with a bridge holding the node IP and the pod range, and no uplink:
  nothing leaves the namespaces made here. The API server listens on the host's loopback;
  a forwarder inside the node's namespace (127.0.0.1:6443 and <node IP>:6443) carries the
  kubelet's, kube-proxy's and the pods' connections to it. Clients reach Services from inside
  the namespace (``nsenter --net=/run/netns/<netns>``).
- Kernel settings: none are changed. kubelet writes vm.overcommit_memory, kernel.panic and
  kernel.panic_on_oops (and checks a few more) at start; the node runs in its own mount
  namespace where files holding the values kubelet wants are bind-mounted over those
  /proc/sys entries, and kubelet runs with protectKernelDefaults, so it only reads them.
  Network sysctls are per network namespace and stay in the node's. kube-proxy is told to
  leave the conntrack table sizes alone.
- Files: the same mount namespace has its own /run, /var/lib and /var/log (tmpfs), where
  containerd, its shims, runc and the CNI plugins keep the state whose paths are fixed;
  everything else lives under DIR.
- cgroups: kubelet's cgroup root is ``<the memory cgroup this runs in>/bko-node-<id>``,
  created in every hierarchy; cgroupfs driver (no systemd), cgroup v1 allowed
  (failCgroupV1: false).
- Stop: every process in the node's cgroups is killed, the mount namespace goes with its
  last process, the cgroups and the network namespace are removed, and the Node object is
  deleted.

    python hack/node.py up --dir DIR --cluster-dir CDIR [--bin-path PATHS]
    python hack/node.py down --dir DIR
    python hack/node.py status --dir DIR

The code is the package hack/localnode/ (LocalNode in localnode.node; its __init__ lists
the modules); this file is the command line, and the supervisor's entry point
(``_supervise``, run inside the node's namespaces).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import node_images
from localcluster.api import ClusterError
from localcluster.cluster import LocalCluster
from localnode.node import LocalNode
from localnode.processes import log
from localnode.supervise import supervise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the node (no-op if it runs) and wait until Ready")
    up.add_argument("--dir", required=True)
    up.add_argument("--cluster-dir", required=True)
    up.add_argument("--bin-path", help="colon-separated directories holding the node binaries")
    up.add_argument("--timeout", type=float, default=600)
    down = sub.add_parser("down", help="stop the node and remove all it made")
    down.add_argument("--dir", required=True)
    status = sub.add_parser("status", help="is the node running and Ready")
    status.add_argument("--dir", required=True)
    sup = sub.add_parser("_supervise")
    sup.add_argument("--dir", required=True)
    sup.add_argument("--host-netns-fd", type=int, required=True)
    sup.add_argument("--host-mnt-fd", type=int, required=True)
    sup.add_argument("--owner-pid", type=int, help="stop, and remove all, when this pid is gone")
    args = parser.parse_args(argv)

    try:
        if args.command == "_supervise":
            return supervise(Path(args.dir), args.host_netns_fd, args.host_mnt_fd, args.owner_pid)
        if args.command == "up":
            began = time.monotonic()
            cluster = LocalCluster(args.cluster_dir)
            LocalNode(args.dir, cluster, args.bin_path).start(timeout=args.timeout)
            log(f"up in {time.monotonic() - began:.1f}s")
            return 0
        node = LocalNode(args.dir)
        state = node.read_state()
        if state is not None:
            node.cluster = LocalCluster(state.cluster_dir)
        if args.command == "down":
            node.stop()
            left = node.leftovers()
            if left:
                log("left behind: " + "; ".join(left))
                return 1
        elif args.command == "status":
            running = node.is_running()
            print(f"{node.name} {'Ready' if running else 'not running'} (netns {node.netns})")
            return 0 if running else 1
    except (ClusterError, subprocess.CalledProcessError, node_images.ImageError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
