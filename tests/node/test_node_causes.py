"""A daemon that cannot run on the real kubelet and containerd is reported on its Builder with
its cause, seconds after the kubelet says so, and the Builder is Ready again once the cause is
fixed; one Warning Event is recorded per cause, not per restart.

One Builder goes through three causes in turn, each fixed before the next:

- its rootless cache on a hostPath volume whose directory is root-owned 0755 (the kubelet
  gives hostPath volumes no fsGroup): buildkitd exits on ``buildkitd.lock: permission
  denied``; fixed as a local provisioner makes its directories, world-writable;
- a raw ``buildkitd.config`` the operator admits (an allowed key) whose value buildkitd's
  decoder refuses (a string where it reads an integer); fixed by removing it;
- an image no registry serves; fixed by going back to the default image.

What is expected comes from the cluster: the buildkitd error line is read from the
container's own log (``kubectl logs --previous``), the image from the pod's spec.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_helpers import (
    GROUP_PATH,
    Host,
    builder,
    create_builder,
    describe,
    pods_of,
    report,
    wait_builder_ready,
)
from operator_process import OperatorProcess

from localcluster.api import Api, wait_for
from localnode.config import NODE_LABEL
from localnode.node import LocalNode

NAME = "causes"
# The kubelet's waiting reasons while it cannot pull an image (pkg/kubelet/images).
PULL_REASONS = {"ErrImagePull", "ImagePullBackOff"}
# An allowed key (worker.oci.max-parallelism) with a value of the wrong type: buildkitd
# reads an integer there (config.OCIConfig.MaxParallelism).
BAD_CONFIG = '[worker.oci]\nmax-parallelism = "lots"\n'
# A name no resolver answers (RFC 2606): there is no registry on this node anyway.
BAD_IMAGE = "registry.invalid/buildkit:none"
TIMEOUT = 120.0


@pytest.fixture
def root_owned_class(node: LocalNode, api: Api, node_namespace: str) -> Iterator[Path]:
    """A StorageClass with one hostPath PersistentVolume on the node whose directory is
    root-owned 0755, as ``DirectoryOrCreate`` makes one; yields that directory. The volume
    is not the pool's (no pool label: recycling leaves it alone); it goes with its claim."""
    name = f"root-owned-{uuid.uuid4().hex[:6]}"
    directory = node.volumes_dir / f"pv-{name}"
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    api.create(
        "/apis/storage.k8s.io/v1/storageclasses",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "kubernetes.io/no-provisioner",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
        exist_ok=False,
    )
    api.create(
        "/api/v1/persistentvolumes",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"pv-{name}"},
            "spec": {
                "capacity": {"storage": "100Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": name,
                "volumeMode": "Filesystem",
                "hostPath": {"path": str(directory), "type": "Directory"},
            },
        },
        exist_ok=False,
    )
    try:
        yield directory
    finally:
        # Deleted now, gone with its claim (the namespace's); the class at once.
        api.delete(f"/api/v1/persistentvolumes/pv-{name}")
        api.delete(f"/apis/storage.k8s.io/v1/storageclasses/{name}")


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def _buildkitd(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == "buildkitd"), {})


def _restarted(status: dict[str, Any]) -> bool:
    return int(status.get("restartCount") or 0) >= 1


def _exited(status: dict[str, Any]) -> bool:
    state, last = status.get("state") or {}, status.get("lastState") or {}
    return bool(status.get("restartCount") or state.get("terminated") or last.get("terminated"))


def _pull_failed(status: dict[str, Any]) -> bool:
    return ((status.get("state") or {}).get("waiting") or {}).get("reason") in PULL_REASONS


# The kubelet restarts a container that exited once at once or after a first back-off; the
# operator calls it a crash loop from the second exit on.
CRASH_MARKS = {"buildkitd's first exit": _exited, "its first restart": _restarted}


def degraded_after(
    api: Api,
    node: LocalNode,
    namespace: str,
    reason: str,
    marks: dict[str, Callable[[dict[str, Any]], bool]],
    label: str,
    before: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Poll the daemon's pods (but those of uids ``before``: the last cause's) and the
    Builder until its Degraded condition is True with ``reason``; returns the Builder and
    the pod, and reports the seconds from when the API server first showed each of
    ``marks`` on the pod's buildkitd container to the condition."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        pods = [p for p in pods_of(api, namespace, NAME) if p["metadata"]["uid"] not in before]
        for what, happened in marks.items():
            if what not in seen and any(happened(_buildkitd(p)) for p in pods):
                seen[what] = time.monotonic()
        obj = builder(api, namespace, NAME)
        degraded = _condition(obj, "Degraded")
        if degraded.get("status") == "True" and degraded.get("reason") == reason:
            now = time.monotonic()
            first = next(iter(marks))
            assert first in seen, f"Degraded {reason} before the pod showed {first}: {degraded}"
            after = ", ".join(f"{now - seen[w]:.1f}s after {w}" for w in marks if w in seen)
            (pod,) = pods
            report(f"{label}: Builder Degraded ({reason}) {after}")
            report(f"{label}: what the user reads: Degraded {reason}: {degraded.get('message')}")
            return obj, pod
        time.sleep(0.2)
    raise AssertionError(f"not Degraded by {reason}:\n{describe(api, namespace, NAME, node)}")


def warnings(api: Api, namespace: str, reason: str) -> list[dict[str, Any]]:
    events = api.get(
        f"/api/v1/namespaces/{namespace}/events"
        f"?fieldSelector=involvedObject.kind=Builder,involvedObject.name={NAME}"
    )["items"]
    return [e for e in events if e.get("type") == "Warning" and e.get("reason") == reason]


def previous_log(node: LocalNode, namespace: str, pod: str) -> str:
    assert node.cluster is not None
    kubectl = node.cluster.kubectl()
    return str(kubectl("logs", "-n", namespace, pod, "-c", "buildkitd", "--previous"))


def buildkitd_error(log: str) -> str:
    """buildkitd's own last words: the line its main prints an error with ("buildkitd: ...")."""
    lines = [line for line in log.splitlines() if line.startswith("buildkitd: ")]
    assert lines, log[-2000:]
    return lines[-1]


def patch_spec(api: Api, namespace: str, patch: dict[str, Any]) -> frozenset[str]:
    """Change the Builder's spec; returns the uids of the pods it had before."""
    before = frozenset(p["metadata"]["uid"] for p in pods_of(api, namespace, NAME))
    api.merge_patch(f"{GROUP_PATH}/namespaces/{namespace}/builders/{NAME}", {"spec": patch})
    return before


def ready_after_fix(api: Api, node: LocalNode, namespace: str, cause: str) -> None:
    seconds = wait_builder_ready(api, namespace, NAME, node, timeout=TIMEOUT)
    obj = builder(api, namespace, NAME)
    assert _condition(obj, "Degraded").get("status") == "False", obj["status"]
    (daemon,) = obj["status"]["daemons"]
    assert daemon["ready"] and "reason" not in daemon, daemon
    report(f"{cause}: Builder Ready {seconds:.1f}s after the fix")


def test_a_daemon_that_cannot_run_is_degraded_with_its_cause_until_fixed(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    root_owned_class: Path,
) -> None:
    host.require_rootless()
    ns = node_namespace
    create_builder(
        api,
        ns,
        NAME,
        {
            "cache": {"storageClassName": root_owned_class.name.removeprefix("pv-")},
            "nodeSelector": {NODE_LABEL: "true"},
        },
    )

    # 1. A rootless cache on storage that ignores fsGroup, in a root-owned 0755 directory.
    obj, pod = degraded_after(api, node, ns, "CrashLoopBackOff", CRASH_MARKS, "cache not writable")
    said = buildkitd_error(previous_log(node, ns, pod["metadata"]["name"]))
    assert "buildkitd.lock" in said and "permission denied" in said, said
    message = _condition(obj, "Degraded")["message"]
    assert said.removeprefix("buildkitd: ") in message, message
    # It names what to do: storage that applies fsGroup, or a directory uid 1000 can write.
    assert "fsGroup" in message and "world-writable" in message, message
    assert _condition(obj, "Stalled").get("status") == "True", obj["status"]
    (daemon,) = obj["status"]["daemons"]
    assert daemon["reason"] == "CrashLoopBackOff" and not daemon["ready"], daemon
    # It goes round (the kubelet's back-off, another exit): still one Warning.
    wait_for(
        lambda: any(_buildkitd(p).get("restartCount", 0) >= 3 for p in pods_of(api, ns, NAME)),
        "a third restart",
        TIMEOUT,
        interval=0.5,
    )
    (event,) = warnings(api, ns, "CrashLoopBackOff")
    assert "buildkitd.lock" in event["message"], event
    root_owned_class.chmod(0o777)  # as local-path-provisioner makes its directories
    # Its owner restarts it rather than wait out the kubelet's back-off (40s by now).
    api.delete(f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")
    ready_after_fix(api, node, ns, "cache not writable (pod deleted)")

    # 2. A config buildkitd refuses at start, in a key the operator admits.
    before = patch_spec(api, ns, {"buildkitd": {"config": BAD_CONFIG}})
    obj, pod = degraded_after(
        api, node, ns, "CrashLoopBackOff", CRASH_MARKS, "config buildkitd refuses", before
    )
    said = buildkitd_error(previous_log(node, ns, pod["metadata"]["name"]))
    assert "MaxParallelism" in said, said
    message = _condition(obj, "Degraded")["message"]
    assert said.removeprefix("buildkitd: ") in message, message
    # Recorded in the pass that wrote the status, just after it.
    wait_for(lambda: len(warnings(api, ns, "CrashLoopBackOff")) >= 2, "a second Warning", 10)
    crash_warnings = warnings(api, ns, "CrashLoopBackOff")
    assert len(crash_warnings) == 2, crash_warnings
    assert sum("MaxParallelism" in e["message"] for e in crash_warnings) == 1, crash_warnings
    patch_spec(api, ns, {"buildkitd": {"config": None}})
    ready_after_fix(api, node, ns, "config buildkitd refuses")

    # 3. An image that cannot be pulled.
    before = patch_spec(api, ns, {"image": BAD_IMAGE})
    obj, pod = degraded_after(
        api, node, ns, "ImagePullBackOff", {"the first failed pull": _pull_failed},
        "image not pulled", before,
    )  # fmt: skip
    (spec_container,) = [c for c in pod["spec"]["containers"] if c["name"] == "buildkitd"]
    assert spec_container["image"] == BAD_IMAGE
    message = _condition(obj, "Degraded")["message"]
    assert BAD_IMAGE in message, message
    wait_for(lambda: warnings(api, ns, "ImagePullBackOff"), "an ImagePullBackOff Warning", 10)
    (event,) = warnings(api, ns, "ImagePullBackOff")
    assert BAD_IMAGE in event["message"], event
    patch_spec(api, ns, {"image": None})
    ready_after_fix(api, node, ns, "image not pulled")
    assert len(warnings(api, ns, "CrashLoopBackOff")) == 2
    assert len(warnings(api, ns, "ImagePullBackOff")) == 1
