"""pods: why a daemon does not run, from pod status documents shaped as the kubelet, the
scheduler and the ReplicaSet controller write them (see the Kubernetes API reference:
PodStatus, ContainerStatus, ContainerStateWaiting/Terminated, DeploymentCondition), and
the Builder status and Events they lead to."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lupa.lua51

from buildkit_operator.api import Builder
from buildkit_operator.reconcile.daemon_state import daemon_state
from buildkit_operator.reconcile.pods import CREATING_TOO_LONG, daemon_cause, daemon_pods
from buildkit_operator.reconcile.report import record_daemon_events, record_phase_event
from buildkit_operator.reconcile.status import compute_status
from buildkit_operator.reconcile.types import Plan

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IMAGE = "moby/buildkit:v0.16.0-rootless"
LOCK = "buildkitd: open /home/user/.local/share/buildkit/buildkitd.lock: permission denied"
SCRIPT = (
    Path(__file__).resolve().parents[2] / "charts" / "buildkit-operator" / "health" / "builder.lua"
).read_text()


def pod(status: dict[str, Any], name: str = "team-a-0-7c9d8f5b6-x7k2p") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ci",
            "labels": {"buildkit.dev/daemon": "0", "app.kubernetes.io/managed-by": "x"},
        },
        "status": status,
    }


def scheduled(phase: str = "Running", since: str = "2026-11-24T11:50:00Z") -> dict[str, Any]:
    """The conditions of a scheduled pod whose container is not ready (kubelet)."""
    return {
        "phase": phase,
        "conditions": [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": since,
            },
            {
                "type": "Initialized",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": since,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "ContainersNotReady",
                "message": "containers with unready status: [buildkitd]",
                "lastProbeTime": None,
                "lastTransitionTime": since,
            },
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "ContainersNotReady",
                "message": "containers with unready status: [buildkitd]",
                "lastProbeTime": None,
                "lastTransitionTime": since,
            },
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": since,
            },
        ],
        "hostIP": "10.0.0.5",
        "podIP": "10.244.1.7",
        "qosClass": "BestEffort",
        "startTime": since,
    }


def container(
    state: dict[str, Any], last: dict[str, Any] | None = None, restarts: int = 0
) -> dict[str, Any]:
    return {
        "name": "buildkitd",
        "image": IMAGE,
        "imageID": "",
        "containerID": "containerd://4f2b",
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": state,
        "lastState": last or {},
    }


def crash_loop(restarts: int = 5, backoff: str = "2m40s", at: str = "11:58:01") -> dict[str, Any]:
    """A crash-looping rootless buildkitd, as `kubectl get pod -o yaml` shows it."""
    terminated = {
        "containerID": "containerd://4f2b",
        "exitCode": 1,
        "reason": "Error",
        "startedAt": f"2026-11-24T{at}Z",
        "finishedAt": f"2026-11-24T{at}Z",
        "message": (
            f'time="2026-11-24T{at}Z" level=info msg="auto snapshotter: using overlayfs"\n'
            f'time="2026-11-24T{at}Z" level=warning msg="using host network as the default"\n'
            f"{LOCK}\n"
        ),
    }
    waiting = {
        "reason": "CrashLoopBackOff",
        "message": f"back-off {backoff} restarting failed container=buildkitd "
        "pod=team-a-0-7c9d8f5b6-x7k2p_ci(5d0e7c1a-6a2f-4a8e-9b9e-0f3c2d1e4b5a)",
    }
    return pod(
        {
            **scheduled(),
            "containerStatuses": [
                container({"waiting": waiting}, {"terminated": terminated}, restarts)
            ],
        }
    )


def deployment(**status: Any) -> dict[str, Any]:
    done = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    return {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "unavailableReplicas": 1,
            "conditions": [done],
            **status,
        },
    }


# --- causes -------------------------------------------------------------------------------


def test_crash_loop_names_the_last_termination_message_without_its_timestamps() -> None:
    cause = daemon_cause([crash_loop()], deployment(), NOW)
    assert cause is not None and cause.reason == "CrashLoopBackOff"
    assert LOCK in cause.message and "exit code 1" in cause.message
    assert "2026-11-24" not in cause.message and "back-off" not in cause.message
    assert "world-writable" in cause.message  # the lock in its cache: what to do


def test_a_crash_loop_reads_the_same_on_every_restart() -> None:
    first = daemon_cause([crash_loop(5, "2m40s", "11:58:01")], deployment(), NOW)
    later = daemon_cause([crash_loop(6, "5m0s", "12:03:07")], deployment(), NOW)
    assert first == later
    # Between two crashes it runs, not ready yet: still the same crash loop.
    running = crash_loop()
    status = running["status"]["containerStatuses"][0]
    status["state"] = {"running": {"startedAt": "2026-11-24T12:03:07Z"}}
    status["started"] = True
    assert daemon_cause([running], deployment(), NOW) == first


def test_a_single_restart_is_no_crash_loop() -> None:
    once = crash_loop(restarts=1)
    status = once["status"]["containerStatuses"][0]
    status["state"] = {"running": {"startedAt": "2026-11-24T11:59:00Z"}}
    assert daemon_cause([once], deployment(), NOW) is None
    # Its first back-off is: the kubelet waits only from the second exit on.
    assert daemon_cause([crash_loop(restarts=1)], deployment(), NOW) is not None


# buildkitd's fatal error as its main prints it (`buildkitd: %+v`): the error, then the
# Go stack trace pkg/errors recorded (v0.34.2, a raw config of the wrong type).
STACK_TRACE = """\
buildkitd: toml: cannot decode TOML string into struct field config.OCIConfig.MaxParallelism \
of type int
failed to parse config
github.com/moby/buildkit/cmd/buildkitd/config.Load
\tgithub.com/moby/buildkit@v0.34.2/cmd/buildkitd/config/load.go:15
github.com/moby/buildkit/cmd/buildkitd/config.LoadFile
\tgithub.com/moby/buildkit@v0.34.2/cmd/buildkitd/config/load.go:30
main.main.func3
\tgithub.com/moby/buildkit@v0.34.2/cmd/buildkitd/main.go:274
github.com/urfave/cli/v3.(*Command).run
\tgithub.com/urfave/cli/v3@v3.11.0/command_run.go:382
github.com/urfave/cli/v3.(*Command).Run
\tgithub.com/urfave/cli/v3@v3.11.0/command_run.go:95
main.main
\tgithub.com/moby/buildkit@v0.34.2/cmd/buildkitd/main.go:495
runtime.main
\truntime/proc.go:290
runtime.goexit
\truntime/asm_amd64.s:1771
"""


# What rootlesskit v2 prints after buildkitd exits, in the rootless image (as the kubelet
# kept it on a real node).
ROOTLESSKIT_EXIT = (
    "[rootlesskit:child ] error: command [buildkitd --addr unix:///run/user/1000/buildkit/"
    "buildkitd.sock --addr tcp://0.0.0.0:1234 --config /etc/buildkit/buildkitd.toml --root "
    "/home/user/.local/share/buildkit --tlscacert /certs/ca.pem --tlscert /certs/cert.pem "
    "--tlskey /certs/key.pem --oci-worker-no-process-sandbox] exited: exit status 1\n"
    "[rootlesskit:parent] error: child exited: exit status 1\n"
)


def test_a_crash_loop_keeps_buildkitds_error_not_its_stack_trace() -> None:
    looping = crash_loop()
    last = looping["status"]["containerStatuses"][0]["lastState"]["terminated"]
    last["message"] = STACK_TRACE + ROOTLESSKIT_EXIT
    cause = daemon_cause([looping], deployment(), NOW)
    assert cause is not None and cause.reason == "CrashLoopBackOff"
    assert (
        "toml: cannot decode TOML string into struct field config.OCIConfig.MaxParallelism "
        "of type int" in cause.message
    ), cause.message
    assert "failed to parse config" in cause.message
    assert "main.go" not in cause.message and "runtime.goexit" not in cause.message
    assert "rootlesskit" not in cause.message  # the exit code says what it says


def test_rootlesskits_exit_report_does_not_hide_the_cache_error() -> None:
    looping = crash_loop()
    last = looping["status"]["containerStatuses"][0]["lastState"]["terminated"]
    last["message"] += ROOTLESSKIT_EXIT
    cause = daemon_cause([looping], deployment(), NOW)
    assert cause is not None and LOCK in cause.message, cause
    assert "world-writable" in cause.message


def test_a_cache_the_rootless_daemon_may_not_write_names_the_fix() -> None:
    """The README's "Cache storage: which storage needs what": storage that applies the
    pod's fsGroup, a world-writable directory, or a rootful Builder."""
    cause = daemon_cause([crash_loop()], deployment(), NOW)
    assert cause is not None and cause.reason == "CrashLoopBackOff" and LOCK in cause.message
    for fix in ("fsGroup", "world-writable", "uid 1000", "rootless: false"):
        assert fix in cause.message, cause.message
    # Another daemon's permission error (not its cache) keeps the general advice.
    other = crash_loop()
    last = other["status"]["containerStatuses"][0]["lastState"]["terminated"]
    last["message"] = "buildkitd: open /etc/buildkit/buildkitd.toml: permission denied\n"
    cause = daemon_cause([other], deployment(), NOW)
    assert cause is not None and "fsGroup" not in cause.message
    assert "kubectl logs" in cause.message


def test_oom_killed_is_its_own_cause() -> None:
    oom = crash_loop()
    last = oom["status"]["containerStatuses"][0]["lastState"]["terminated"]
    last.update(reason="OOMKilled", exitCode=137, message="")
    cause = daemon_cause([oom], deployment(), NOW)
    assert cause is not None and cause.reason == "OOMKilled"
    assert "exit code 137" in cause.message and "resources.limits.memory" in cause.message


def test_image_pull_errors_are_one_cause_with_the_image() -> None:
    err = {
        "reason": "ErrImagePull",
        "message": 'failed to pull and unpack image "docker.io/moby/buildkit:nope": failed to '
        'resolve reference "docker.io/moby/buildkit:nope": not found',
    }
    back_off = {
        "reason": "ImagePullBackOff",
        "message": 'Back-off pulling image "moby/buildkit:nope"',
    }
    causes = []
    for waiting in (err, back_off):
        state = container({"waiting": waiting})
        state["image"] = "moby/buildkit:nope"
        causes.append(
            daemon_cause(
                [pod({**scheduled("Pending"), "containerStatuses": [state]})], deployment(), NOW
            )
        )
    assert [c.reason for c in causes if c] == ["ImagePullBackOff", "ImagePullBackOff"]
    assert all("moby/buildkit:nope" in c.message for c in causes if c)
    # The kubelet alternates the two while it retries: the Builder reads the same.
    assert causes[0] == causes[1]
    assert "kubectl describe pod team-a-0-7c9d8f5b6-x7k2p" in causes[0].message  # type: ignore[union-attr]


def test_unschedulable_carries_the_scheduler_message() -> None:
    message = (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )
    pending = pod(
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": "2026-11-24T11:00:00Z",
                }
            ],
            "qosClass": "BestEffort",
        }
    )
    cause = daemon_cause([pending], deployment(), NOW)
    assert cause is not None and cause.reason == "Unschedulable"
    assert message in cause.message and "nodeSelector" in cause.message


def test_create_container_config_error() -> None:
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "team-a-tls" not found'}
    p = pod({**scheduled("Pending"), "containerStatuses": [container({"waiting": waiting})]})
    cause = daemon_cause([p], deployment(), NOW)
    assert cause is not None and cause.reason == "CreateContainerConfigError"
    assert 'secret "team-a-tls" not found' in cause.message


def test_failed_create_names_the_refusal() -> None:
    refused = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "team-a-0-7c9d8f5b6-" is forbidden: exceeded quota: pods, requested: '
        "pods=1, used: pods=1, limited: pods=1",
        "lastUpdateTime": "2026-11-24T11:00:00Z",
        "lastTransitionTime": "2026-11-24T11:00:00Z",
    }
    dep = deployment(conditions=[refused], replicas=0, updatedReplicas=0)
    cause = daemon_cause([], dep, NOW)
    assert cause is not None and cause.reason == "FailedCreate"
    assert "exceeded quota: pods" in cause.message and "ResourceQuota" in cause.message


def test_container_creating_is_reported_only_once_it_lasts() -> None:
    waiting = {"reason": "ContainerCreating"}
    since = (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = pod({**scheduled("Pending", since), "containerStatuses": [container({"waiting": waiting})]})
    assert daemon_cause([p], deployment(), NOW) is None
    cause = daemon_cause([p], deployment(), NOW + CREATING_TOO_LONG)
    assert cause is not None and cause.reason == "ContainerCreating"
    assert "kubectl describe pod" in cause.message


def test_healthy_starting_and_terminating_pods_have_no_cause() -> None:
    starting = pod(
        {**scheduled(), "containerStatuses": [container({"running": {"startedAt": "x"}})]}
    )
    assert daemon_cause([starting], deployment(), NOW) is None
    ready = copy.deepcopy(crash_loop())
    ready["status"]["containerStatuses"][0]["ready"] = True
    assert daemon_cause([ready], deployment(), NOW) is None
    going = crash_loop()
    going["metadata"]["deletionTimestamp"] = "2026-11-24T11:59:00Z"
    assert daemon_cause([going], deployment(), NOW) is None


def test_pods_are_grouped_by_daemon() -> None:
    other = crash_loop()
    other["metadata"]["labels"]["buildkit.dev/daemon"] = "1"
    grouped = daemon_pods([crash_loop(), other, {"metadata": {"name": "unlabelled"}}])
    assert sorted(grouped) == ["0", "1"]


# --- the status and Events they lead to ---------------------------------------------------


def builder() -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "generation": 3},
            "spec": {},
        }
    )


def status(
    pods: list[dict[str, Any]], previous: dict[str, Any], now: datetime = NOW
) -> dict[str, Any]:
    from buildkit_operator.api.daemons import daemons

    slot = daemons(builder())[0]
    state = daemon_state("team-a-0", deployment(), slot, pods=pods, now=now)
    return compute_status(
        builder(), Plan(), [state], certificate_not_after=None, previous=previous, now=now
    )


def conditions(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in s["conditions"]}


def health(obj_status: dict[str, Any]) -> str:
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    obj = {"metadata": {"generation": 3}, "status": obj_status}
    lua.globals().obj = lua.table_from(copy.deepcopy(obj), recursive=True)
    return str(lua.execute(SCRIPT)["status"])


def test_a_crash_looping_builder_is_degraded_and_stalled_not_rolling_out() -> None:
    s = status([crash_loop()], {})
    c = conditions(s)
    assert s["phase"] == "Degraded"
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "CrashLoopBackOff"
    assert LOCK in c["Degraded"]["message"]
    assert c["Stalled"]["status"] == "True" and c["Stalled"]["reason"] == "CrashLoopBackOff"
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "CrashLoopBackOff"
    for kind in ("Progressing", "Reconciling"):
        assert c[kind]["status"] == "False" and c[kind]["reason"] != "RollingOut"
    assert s["daemons"][0]["reason"] == "CrashLoopBackOff" and LOCK in s["daemons"][0]["message"]
    # Argo CD and kstatus read the same: Degraded.
    assert health(s) == "Degraded"


def test_status_holds_still_while_the_crash_loop_goes_round() -> None:
    first = status([crash_loop(5, "2m40s", "11:58:01")], {})
    later = status([crash_loop(9, "5m0s", "12:20:00")], first, NOW + timedelta(minutes=30))
    assert later == first


def test_a_stale_deployment_ignores_the_old_pods() -> None:
    stale = deployment()
    stale["metadata"]["generation"] = 2
    state = daemon_state("team-a-0", stale, pods=[crash_loop()], now=NOW)
    assert state.cause is None and state.rolling


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str]] = []

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.recorded.append((type_, reason, message))


def test_one_warning_per_new_cause_per_daemon() -> None:
    kube, obj = Events(), {"metadata": {"name": "team-a", "namespace": "ci"}}
    ready: dict[str, Any] = {"phase": "Ready", "daemons": [{"name": "team-a-0"}]}
    crashing = status([crash_loop()], ready)
    record_phase_event(kube, obj, ready, crashing, True)  # type: ignore[arg-type]
    record_daemon_events(kube, obj, ready, crashing)  # type: ignore[arg-type]
    assert [(t, r) for t, r, _ in kube.recorded] == [("Warning", "CrashLoopBackOff")]
    assert LOCK in kube.recorded[0][2]
    # The loop goes round with another last line: no new Event.
    again = crash_loop()
    again["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"] = "other"
    changed = status([again], crashing)
    assert changed != crashing
    record_phase_event(kube, obj, crashing, changed, True)  # type: ignore[arg-type]
    record_daemon_events(kube, obj, crashing, changed)  # type: ignore[arg-type]
    assert len(kube.recorded) == 1
