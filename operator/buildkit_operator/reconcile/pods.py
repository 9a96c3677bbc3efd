"""Why a daemon does not run, read from its pods and its Deployment. Pure.

A Deployment says only that its pod is not available; the kubelet and the scheduler write
why into the pod's status (a container waiting in CrashLoopBackOff with its last
termination, an image that cannot be pulled, a PodScheduled condition False), and the
ReplicaSet controller into the Deployment's ReplicaFailure condition when the API server
refuses the pod itself (a ResourceQuota, a LimitRange, an admission policy). Each becomes
one ``Cause``, whose reason is a condition reason and whose message says what a person
must do.

A cause must read the same for as long as the world does, or the status would be written
(and an Event recorded) on every restart: restart counts, back-off delays and the
timestamps of buildkitd's log lines are left out of its message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..api.names import LABEL_DAEMON
from ..render.workload import ROOTLESS, ROOTLESS_UID

# How long a pod may stay in ContainerCreating before it is reported: longer than any image
# pull of a healthy node, shorter than a person's patience.
CREATING_TOO_LONG = timedelta(minutes=5)
# The characters of a termination message kept (its end: the last lines say why).
MESSAGE_TAIL = 400

_READ_THE_LOG = "fix what its log says (kubectl logs {} -c {} --previous)"
# What to do when the rootless daemon may not write its cache: the README's "Cache storage:
# which storage needs what".
_CACHE_NOT_WRITABLE = (
    f"the cache volume is not writable by the rootless daemon (uid {ROOTLESS_UID}): its "
    "storage does not apply the pod's fsGroup (hostPath and local-path volumes, NFS, CSI "
    "drivers with fsGroupPolicy None); make the volume's directory world-writable (or owned "
    f"by uid {ROOTLESS_UID}), use a StorageClass whose storage applies fsGroup (block storage, "
    "local volumes, CSI with fsGroupPolicy File), or set the Builder's rootless: false"
)

# Every reason a cause can have (the Degraded condition's reasons, and the Warning Events').
CAUSES = (
    "FailedCreate",
    "Unschedulable",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "OOMKilled",
    "CrashLoopBackOff",
    "ContainerCreating",
)

# The kubelet's waiting reasons of a container whose image it cannot get. ErrImagePull and
# ImagePullBackOff alternate while the pull is retried: both are one cause.
_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_RETRIED_PULL = {"ErrImagePull", "ImagePullBackOff"}
_CREATE = {"CreateContainerConfigError", "CreateContainerError"}
# buildkitd logs through logrus (time="..." level=...); other tools start lines with a
# timestamp. Either changes on every run of the same failure.
_TIMESTAMP = re.compile(
    r'time="[^"]*"\s*'
    r"|\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\s*"
)

# What rootlesskit (the rootless image's entrypoint) adds when buildkitd exits: the exit
# status (already in the message) and buildkitd's whole command line, long enough to push
# buildkitd's own error out of the kept tail.
_ROOTLESSKIT_EXIT = re.compile(
    r"\[rootlesskit:(?:child |parent)\] error: (?:command \[.*\] exited|child exited): "
    r"exit status \d+$"
)
# The second line of a Go stack frame: a tab, the source file and line (and an offset).
_FRAME_LOCATION = re.compile(r"\t\S+\.(?:go|s):\d+(?: \+0x[0-9a-f]+)?$")


@dataclass(frozen=True)
class Cause:
    """Why a daemon does not run: a CamelCase reason (one of CAUSES) and what to do."""

    reason: str
    message: str


def daemon_pods(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """A Builder's pods by the daemon they run (its id, the daemon label's value)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        daemon = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_DAEMON)
        if daemon is not None:
            out.setdefault(str(daemon), []).append(pod)
    return out


def daemon_cause(
    pods: Sequence[Mapping[str, Any]],
    deployment: Mapping[str, Any] | None,
    now: datetime,
) -> Cause | None:
    """The cause of a not-ready daemon, from its Deployment (a pod the API server refused)
    and then its pods in name order; None when nothing says it is stuck (it may be starting).
    """
    refused = _replica_failure(deployment)
    if refused is not None:
        return refused
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue  # going away: its replacement is what counts
        cause = pod_cause(pod, now)
        if cause is not None:
            return cause
    return None


def pod_cause(pod: Mapping[str, Any], now: datetime) -> Cause | None:
    """Why one pod does not run, or None."""
    name = str((pod.get("metadata") or {}).get("name", "?"))
    status = pod.get("status") or {}
    scheduled = _condition(status, "PodScheduled")
    if (
        scheduled
        and scheduled.get("status") == "False"
        and (scheduled.get("reason") == "Unschedulable")
    ):
        return Cause(
            "Unschedulable",
            f"pod {name} cannot be scheduled: {scheduled.get('message') or 'no node fits'}; "
            "change the Builder's nodeSelector, tolerations, affinity or resources, or add "
            "a node that fits",
        )
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        cause = _container_cause(name, container)
        if cause is not None:
            return cause
    return _creating_too_long(name, status, now)


def _container_cause(pod: str, container: Mapping[str, Any]) -> Cause | None:
    if container.get("ready"):
        return None
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    name = container.get("name", "?")
    what = f"container {name} of pod {pod}"
    if reason in _PULL:
        detail = waiting.get("message") or reason
        if reason in _RETRIED_PULL:
            # Each of the two has its own message (the registry's answer, then "Back-off
            # pulling image"): naming either would change the status on every retry.
            detail = f"the kubelet retries (kubectl describe pod {pod} shows the registry's answer)"
        return Cause(
            "ImagePullBackOff",
            f"{what} cannot pull image {container.get('image') or '?'}: {detail}; check "
            "the Builder's image and imagePullSecrets",
        )
    if reason in _CREATE:
        return Cause(
            "CreateContainerConfigError",
            f"{what} cannot be created: {waiting.get('message') or reason}; fix what it "
            "names (a missing Secret or ConfigMap, a securityContext the image cannot meet)",
        )
    # The kubelet restarts a container that exited once at once, and holds it in back-off
    # (CrashLoopBackOff) from its second exit on, restarting it after each wait: between
    # two crashes it is running (not ready) with two restarts or more. Both are one crash
    # loop, so the status holds still while it goes round; a single restart (a liveness
    # probe's, a daemon that then starts) is none.
    ended = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    looping = reason == "CrashLoopBackOff" or int(container.get("restartCount") or 0) >= 2
    if not ended or not looping:
        return None
    code = ended.get("exitCode")
    if ended.get("reason") == "OOMKilled":
        return Cause(
            "OOMKilled",
            f"{what} was killed for using more memory than its limit (exit code {code}); "
            "raise the Builder's resources.limits.memory, or build with less parallelism",
        )
    said = _tail(str(ended.get("message") or ""))
    why = f"exit code {code}" + (f", {ended['reason']}" if ended.get("reason") else "")
    return Cause(
        "CrashLoopBackOff",
        f"{what} keeps exiting ({why})"
        + (f": {said}" if said else "")
        + "; "
        + (_CACHE_NOT_WRITABLE if _cache_refused(said) else _READ_THE_LOG.format(pod, name)),
    )


def _cache_refused(said: str) -> bool:
    """buildkitd (uid 1000 in the rootless image) may not write its state directory: the
    cache volume's storage did not apply the pod's fsGroup to a directory only root may
    write (a hostPath volume, NFS)."""
    return "permission denied" in said and ROOTLESS.root in said


def _creating_too_long(pod: str, status: Mapping[str, Any], now: datetime) -> Cause | None:
    """A scheduled pod still creating its containers long after it was placed: most often
    a volume that does not mount (the reason is in the pod's Events, which are not read)."""
    if status.get("phase") != "Pending":
        return None
    scheduled = _condition(status, "PodScheduled")
    if not scheduled or scheduled.get("status") != "True":
        return None
    since = _parse_time(scheduled.get("lastTransitionTime"))
    if since is None or now - since < CREATING_TOO_LONG:
        return None
    return Cause(
        "ContainerCreating",
        f"pod {pod} has been starting since {scheduled['lastTransitionTime']} (most often "
        f"a volume that does not mount); `kubectl describe pod {pod}` shows why in its Events",
    )


def _replica_failure(deployment: Mapping[str, Any] | None) -> Cause | None:
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return Cause(
                "FailedCreate",
                "the API server refuses the daemon's pod: "
                + (cond.get("message") or cond.get("reason") or "no reason given")
                + "; raise the namespace's ResourceQuota or LimitRange, or lower the "
                "Builder's resources, or ask who runs the admission policy that refuses it",
            )
    return None


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def _tail(text: str) -> str:
    """The last lines of a termination message, without their timestamps, a Go stack trace
    or rootlesskit's report of the exit: buildkitd prints its fatal error with a stack trace
    (``buildkitd: <error>`` and then a function and a tab-indented ``file.go:line`` per
    frame), and rootlesskit follows it with buildkitd's command line; either would push the
    error out of the kept tail."""
    lines = [
        _TIMESTAMP.sub("", line).strip()
        for line in _without_frames(text.splitlines())
        if not _ROOTLESSKIT_EXIT.match(line)
    ]
    joined = " / ".join(line for line in lines if line)
    return joined if len(joined) <= MESSAGE_TAIL else "..." + joined[-MESSAGE_TAIL:]


def _without_frames(lines: list[str]) -> list[str]:
    """The lines that are not frames of a Go stack trace (a function, then its location)."""
    out: list[str] = []
    skip = False
    for here, after in zip(lines, [*lines[1:], ""], strict=True):
        if skip:
            skip = False
        elif _FRAME_LOCATION.match(after) and not any(c.isspace() for c in here):
            skip = True  # this function's location line goes with it
        elif not _FRAME_LOCATION.match(here):
            out.append(here)
    return out


def _parse_time(text: Any) -> datetime | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
