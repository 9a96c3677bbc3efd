"""The node's supervisor (``hack/node.py _supervise``): runs inside the node's network and
mount namespaces, shows kubelet its kernel settings, mounts the private directories, runs
the forwarder and the API server's egress proxy, starts containerd, kube-proxy and
kubelet, and stops them all (and what they started) when told to, or when the process
that started the node is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from cgroups import cgroup_mounts, kill_cgroup, make_cgroup, remove_cgroup
from localcluster.config import egress_socket

from .config import (
    APISERVER_PORT,
    KUBELET_SYSCTLS,
    NODE_IP,
    NODE_LABEL,
    NODE_NAME,
    PRIVATE_DIRS,
    VISIBLE_PROC,
)
from .netns import forward, libc, serve_egress
from .processes import NodeError, NodeState, log, read_state

PR_SET_CHILD_SUBREAPER = 36


def supervise(
    directory: Path, host_netns_fd: int, host_mnt_fd: int, owner_pid: int | None = None
) -> int:
    """Runs inside the node's network and mount namespaces; starts and stops the daemons.

    The namespace lives as long as this process: when it exits, the mounts made here go.
    """
    state = read_state(directory / "state.json")
    if state is None:
        log("no state.json")
        return 1
    libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    system_cgroup = f"{state.cgroup}/system"
    make_cgroup(system_cgroup)
    for mount in cgroup_mounts().values():
        procs = mount / system_cgroup.lstrip("/") / "cgroup.procs"
        with contextlib.suppress(OSError):
            procs.write_text(str(os.getpid()))

    def sh(*args: str) -> None:
        subprocess.run(args, check=True)

    sysctl_dir = directory / "sysctl"
    sysctl_dir.mkdir(exist_ok=True)
    for key, value in KUBELET_SYSCTLS.items():
        target = Path("/proc/sys") / key
        if not target.exists():
            continue
        source = sysctl_dir / key.replace("/", ".")
        source.write_text(value + "\n")
        sh("mount", "--bind", str(source), str(target))
        sh("mount", "-o", "remount,bind,ro", str(target))
    for private in PRIVATE_DIRS:
        sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", private)
    Path("/var/log/containers").mkdir()
    # A container in a user namespace (hostUsers: false) mounts a proc of its own, which the
    # kernel allows only where some proc mount of the mount namespace has nothing mounted
    # over a file in it (fs/namespace.c, mnt_already_visible); the sysctl files above are.
    # One more proc mount, covered by nothing, where nothing reads it, keeps /proc/sys as
    # kubelet must see it and lets those containers start, as on a real node.
    Path(VISIBLE_PROC).mkdir()
    sh("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", VISIBLE_PROC)
    Path("/run/netns").mkdir()

    listeners = []
    for address in ("127.0.0.1", NODE_IP):
        listener = socket.create_server((address, APISERVER_PORT), backlog=64)
        listeners.append(listener)
        threading.Thread(
            target=forward, args=(listener, host_netns_fd, state.api_port), daemon=True
        ).start()

    # The API server's way to the kubelet: its egress socket, served from this namespace.
    egress_path = egress_socket(Path(state.cluster_dir))
    egress_path.unlink(missing_ok=True)
    egress = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    egress.bind(str(egress_path))
    egress_path.chmod(0o600)
    egress.listen(64)
    listeners.append(egress)
    threading.Thread(target=serve_egress, args=(egress, host_netns_fd), daemon=True).start()

    binaries = {k: Path(v) for k, v in state.binaries.items()}
    path_env = ":".join(
        [
            str(binaries["containerd"].parent),
            str(binaries["kubelet"].parent),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    )
    env = {"PATH": path_env, "HOME": str(directory), "LANG": "C.UTF-8"}
    config = directory / "config"
    commands = {
        "containerd": [str(binaries["containerd"]), "--config", str(config / "containerd.toml")],
        "kube-proxy": [str(binaries["kube-proxy"]), f"--config={config / 'kube-proxy.yaml'}"],
        "kubelet": [
            str(binaries["kubelet"]),
            f"--config={config / 'kubelet.yaml'}",
            f"--kubeconfig={config / 'kubelet.kubeconfig'}",
            f"--root-dir={directory / 'kubelet'}",
            f"--cert-dir={directory / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=true",
        ],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def spawn(name: str) -> None:
        with open(directory / "logs" / f"{name}.log", "ab") as out:
            children[name] = subprocess.Popen(
                commands[name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=directory,
            )
        log(f"started {name} (pid {children[name].pid})")

    status = 0
    try:
        spawn("containerd")
        while not stopping.is_set() and not (directory / "run-kubelet").exists():
            if children["containerd"].poll() is not None:
                raise NodeError("containerd exited")
            time.sleep(0.2)
        if not stopping.is_set():
            spawn("kube-proxy")
            spawn("kubelet")
        while not stopping.is_set():
            if owner_pid is not None and not Path(f"/proc/{owner_pid}").exists():
                raise NodeError(f"the process that started the node ({owner_pid}) is gone")
            for name, child in children.items():
                if child.poll() is not None:
                    raise NodeError(f"{name} exited with status {child.returncode}")
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            stopping.wait(0.5)
    except NodeError as exc:
        log(f"error: {exc}")
        status = 1
    finally:
        log("stopping")
        for name in ("kubelet", "kube-proxy"):
            _terminate(children.get(name))
        # The pods: no graceful deletion here; the node and all it ran go together.
        kill_cgroup(f"{state.cgroup}/kubepods")
        _terminate(children.get("containerd"))
        # Shims and anything else left, except this process.
        kill_cgroup(state.cgroup, exclude=(os.getpid(),))
        for listener in listeners:
            listener.close()
        egress_path.unlink(missing_ok=True)
        if owner_pid is not None and not Path(f"/proc/{owner_pid}").exists():
            _remove_from_host(state, host_mnt_fd)
        log("stopped")
    return status


def _terminate(child: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM a running child, SIGKILL it if it is still there after ``timeout`` seconds."""
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _remove_from_host(state: NodeState, host_mnt_fd: int) -> None:
    """With nobody left to run `down`: leave the node's cgroups for the parent one and
    remove them, and delete the network namespace through the host's mount namespace
    (its /run/netns is hidden here)."""
    parent = state.cgroup.rsplit("/", 1)[0] or "/"
    for mount in cgroup_mounts().values():
        with contextlib.suppress(OSError):
            (mount / parent.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))
    left = remove_cgroup(state.cgroup)
    subprocess.run(
        ["nsenter", f"--mount=/proc/self/fd/{host_mnt_fd}", "--", "ip", "netns", "del",
         state.netns],
        check=False,
        pass_fds=(host_mnt_fd,),
    )  # fmt: skip
    log(f"removed the node's cgroups{f' (left: {left})' if left else ''} and network namespace")
