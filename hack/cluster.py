#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, for the tests and for development.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which plays the
kubelets of three fake nodes) as local processes built from the pinned Go modules under
hack/tools/. Pods are really scheduled by kube-scheduler, Deployments really roll out through
kube-controller-manager, PersistentVolumeClaims really bind through the PV controller, and
RBAC is enforced. Nothing runs in containers: kwok marks scheduled pods Running and Ready.

    python hack/cluster.py up --dir DIR [--bin-path PATHS]   start (no-op if already running)
    python hack/cluster.py env --dir DIR [--path PATHS]      print export lines for a shell
    python hack/cluster.py status --dir DIR                  show the processes
    python hack/cluster.py recycle --dir DIR                 make Released volumes Available
    python hack/cluster.py down --dir DIR                    stop everything

The code is the package hack/localcluster/ (LocalCluster in localcluster.cluster; its
__init__ lists the modules); this file is only the command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from localcluster.api import ClusterError, log
from localcluster.binaries import split_paths
from localcluster.cluster import LocalCluster
from localcluster.manifests import NODE_ALLOCATABLE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", required=True, help="cluster directory (state, logs, kubeconfig)")
        return p

    up = add("up", "start the cluster (no-op if it runs) and wait until it is healthy")
    up.add_argument(
        "--bin-path",
        help="colon-separated directories holding the binaries "
        "(default: build or reuse them with hack/build-tools.sh)",
    )
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for health")
    up.add_argument(
        "--extra-nodes",
        type=int,
        default=0,
        help=f"more amd64 kwok nodes, {NODE_ALLOCATABLE['pods']} pods each",
    )
    add("down", "stop every process of the cluster")
    env = add("env", "print export lines for a POSIX shell")
    env.add_argument("--path", help="colon-separated directories to put first on PATH")
    add("status", "show the state of each process")
    add("recycle", "make Released pool volumes Available again")

    args = parser.parse_args(argv)
    cluster = LocalCluster(
        args.dir, getattr(args, "bin_path", None), extra_nodes=getattr(args, "extra_nodes", 0)
    )
    try:
        if args.command == "up":
            began = time.monotonic()
            cluster.start(timeout=args.timeout)
            log(f"up in {time.monotonic() - began:.1f}s")
        elif args.command == "down":
            cluster.stop()
        elif args.command == "env":
            if cluster._read_state() is None:
                raise ClusterError(f"no cluster in {cluster.dir}: run `up` first")
            print("\n".join(cluster.env_lines(split_paths(args.path))))
        elif args.command == "status":
            running = cluster.running_components()
            for component, alive in running.items():
                print(f"{component:<24} {'running' if alive else 'stopped'}")
            print(f"{'api server':<24} {'ready' if cluster.is_running() else 'not ready'}")
            return 0 if cluster.is_running() else 1
        elif args.command == "recycle":
            recycled = cluster.recycle_volumes()
            log(f"recycled {len(recycled)} volumes")
    except ClusterError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
