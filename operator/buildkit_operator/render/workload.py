"""The buildkitd Deployments: one per daemon, so each daemon keeps its own cache volume.

A StatefulSet would also give each pod its own claim, but its volumeClaimTemplates are
immutable and its claims outlive scale-down without an owner; per-daemon Deployments let the
operator own every claim explicitly and change storage without replacing the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Builder, pool_slug
from ..api.daemons import Daemon, node_labels
from ..api.names import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_IDLE_SINCE,
    ANNOTATION_TLS_HASH,
    LABEL_POOL,
    PORT,
    PORT_NAME,
    ChildNames,
    child_labels,
    daemon_selector_labels,
)
from .config import CONFIG_KEY
from .meta import object_meta

CONFIG_DIR = "/etc/buildkit"
CERTS_DIR = "/certs"
ROOTLESS_UID = 1000
METRICS_PORT = 6060
METRICS_PORT_NAME = "metrics"
# Seconds buildkitd gets to shut down after its preStop hook: the grace period covers both.
SHUTDOWN_SECONDS = 30
# How long a daemon that failed its liveness probe gets to stop before it is killed.
WEDGED_SECONDS = 10
# One buildctl call of a probe or of the preStop hook; `timeout` ends a call a wedged daemon
# never answers before the kubelet gives up on it, so no probe process is left behind.
CALL_SECONDS = 4


@dataclass(frozen=True)
class Layout:
    """Where buildkitd keeps its state and socket; differs between the two images."""

    root: str
    socket: str


ROOTFUL = Layout(root="/var/lib/buildkit", socket="unix:///run/buildkit/buildkitd.sock")
ROOTLESS = Layout(
    root="/home/user/.local/share/buildkit",
    socket=f"unix:///run/user/{ROOTLESS_UID}/buildkit/buildkitd.sock",
)


def layout(builder: Builder) -> Layout:
    return ROOTLESS if builder.spec.rootless_image else ROOTFUL


def buildkitd_args(builder: Builder, daemon: Daemon | None = None) -> list[str]:
    """Arguments to the image's entrypoint (``buildkitd``, or ``rootlesskit buildkitd``).

    A pool's daemon advertises its pool's platform (a flag, so that one buildkitd.toml
    serves every pool), unless buildkitd.platforms says what the workers advertise."""
    where = layout(builder)
    args = [
        "--addr",
        where.socket,
        "--addr",
        f"tcp://0.0.0.0:{PORT}",
        "--config",
        f"{CONFIG_DIR}/{CONFIG_KEY}",
        "--root",
        where.root,
    ]
    if builder.spec.tls.mode != "disabled":
        args += [
            "--tlscacert",
            f"{CERTS_DIR}/ca.pem",
            "--tlscert",
            f"{CERTS_DIR}/cert.pem",
            "--tlskey",
            f"{CERTS_DIR}/key.pem",
        ]
    if builder.spec.rootless_image:
        args.append("--oci-worker-no-process-sandbox")
    if daemon is not None and daemon.pool is not None and not builder.spec.buildkitd.platforms:
        args += ["--oci-worker-platform", daemon.pool.platform]
    if builder.spec.metrics.enabled:
        args += ["--debugaddr", f"0.0.0.0:{METRICS_PORT}"]
    return args + list(builder.spec.buildkitd.args)


def _buildctl(builder: Builder, *command: str) -> list[str]:
    """A buildctl call on the daemon's own socket that ends within CALL_SECONDS."""
    return [
        "timeout", "-s", "KILL", str(CALL_SECONDS),
        "buildctl", "--addr", layout(builder).socket, *command,
    ]  # fmt: skip


def _probe(builder: Builder, *, period: int, failures: int) -> dict[str, Any]:
    """Asks the daemon for its workers over its control API: a daemon that is wedged (or
    stopped) does not answer, and the probe fails within CALL_SECONDS."""
    return {
        "exec": {"command": _buildctl(builder, "debug", "workers")},
        "initialDelaySeconds": 5,
        "periodSeconds": period,
        "timeoutSeconds": CALL_SECONDS + 1,
        "failureThreshold": failures,
    }


def drain_script(builder: Builder) -> str:
    """The preStop hook: wait while the daemon has builds in flight, at most
    drain.gracePeriodSeconds. Builds in flight are BuildKit's own records of them (the
    STARTED events of its build history); a daemon that does not answer has none to lose."""
    history = " ".join(_buildctl(builder, "debug", "histories", "--format", "'{{.Type}}'"))
    return (
        f"end=$(( $(date +%s) + {builder.spec.drain.grace_period_seconds} )); "
        f'while [ "$(date +%s)" -lt "$end" ]; do '
        f'[ "$({history} 2>/dev/null | grep -c STARTED)" = 0 ] && exit 0; '
        "sleep 2; done"
    )


def _security_context(builder: Builder) -> dict[str, Any]:
    if builder.spec.profile != "rootless":
        # privileged: on the node. userns: inside the pod's own user namespace only
        # (hostUsers: false), where root and its capabilities map to an unprivileged uid.
        return {"privileged": True}
    return {
        "runAsUser": ROOTLESS_UID,
        "runAsGroup": ROOTLESS_UID,
        # rootlesskit needs to create user namespaces and mount: the default seccomp and
        # AppArmor profiles forbid both.
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
        # The container's own capabilities: none but what newuidmap and newgidmap gain from
        # their file capabilities (or setuid root), which the bounding set must still hold
        # to write rootlesskit's uid and gid maps. rootlesskit and buildkitd get theirs from
        # the user namespace rootlesskit creates, whose bounding set the kernel fills anew.
        # allowPrivilegeEscalation stays unset: false (no_new_privs) would keep newuidmap
        # from gaining those two at exec.
        "capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID"]},
    }


def _cache_volume(builder: Builder, index: int | str) -> dict[str, Any]:
    cache = builder.spec.cache
    if cache.type == "persistent":
        claim = ChildNames(builder.name).cache_claim(index)
        return {"name": "cache", "persistentVolumeClaim": {"claimName": claim}}
    return {"name": "cache", "emptyDir": {"sizeLimit": cache.effective_size}}


def _tls_secret_name(builder: Builder) -> str | None:
    tls = builder.spec.tls
    if tls.mode == "disabled":
        return None
    if tls.mode == "secret":
        return tls.secret_name
    return ChildNames(builder.name).server_secret


def _pod_spec(builder: Builder, daemon: Daemon) -> dict[str, Any]:
    spec, index = builder.spec, daemon.id
    names = ChildNames(builder.name)
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "cache", "mountPath": layout(builder).root},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map}},
        _cache_volume(builder, index),
    ]
    secret_name = _tls_secret_name(builder)
    if secret_name:
        mounts.append({"name": "certs", "mountPath": CERTS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "certs",
                "secret": {
                    "secretName": secret_name,
                    "defaultMode": 0o440,
                    "items": [{"key": k, "path": k} for k in ("ca.pem", "cert.pem", "key.pem")],
                },
            }
        )
    container: dict[str, Any] = {
        "name": "buildkitd",
        "image": spec.effective_image,
        "args": buildkitd_args(builder, daemon),
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": _probe(builder, period=10, failures=2),
        "livenessProbe": {
            **_probe(builder, period=20, failures=3),
            # A wedged daemon has no build to drain: restart it without waiting out the
            # grace period meant for builds.
            "terminationGracePeriodSeconds": WEDGED_SECONDS,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", drain_script(builder)]}}},
        "securityContext": _security_context(builder),
        "volumeMounts": mounts,
        # buildkitd writes no termination message file: its last log lines stand in for it,
        # so the status can say why a crash-looping daemon exits (reconcile/pods.py).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.metrics.enabled:
        container["ports"].append(
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}
        )
    resources = daemon.pool.resources if daemon.pool and daemon.pool.resources else spec.resources
    if resources is not None:
        container["resources"] = resources.model_dump(exclude_defaults=True)
    pod: dict[str, Any] = {
        "hostname": names.daemon(index),
        # With the headless Service of this name, <hostname>.<subdomain>.<ns>.svc resolves
        # to this daemon alone, which the server certificate covers.
        "subdomain": names.daemons_service,
        # The preStop hook's drain, then buildkitd's own shutdown.
        "terminationGracePeriodSeconds": spec.drain.grace_period_seconds + SHUTDOWN_SECONDS,
        # buildkitd talks to registries, not to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.profile == "userns":
        pod["hostUsers"] = False
    if spec.rootless_image:
        # Makes the cache volume and the key readable and writable by uid 1000.
        pod["securityContext"] = {"fsGroup": ROOTLESS_UID, "fsGroupChangePolicy": "OnRootMismatch"}
    selector = dict(spec.node_selector)
    if daemon.pool is not None:
        selector |= {**daemon.pool.node_selector, **node_labels(daemon.pool)}
    if selector:
        pod["nodeSelector"] = selector
    if spec.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    if spec.affinity:
        pod["affinity"] = spec.affinity
    if spec.topology_spread_constraints:
        pod["topologySpreadConstraints"] = spec.topology_spread_constraints
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return pod


def deployment(
    builder: Builder,
    daemon: Daemon | int,
    *,
    config_hash: str,
    tls_hash: str | None,
    idle_since: str | None = None,
) -> dict[str, Any]:
    """The Deployment running ``daemon`` (an index stands for the daemon of that id).

    Recreate, not RollingUpdate: two pods of one daemon must never run on one cache volume.
    """
    spec = builder.spec
    if isinstance(daemon, int):
        daemon = Daemon(str(daemon), None)
    selector = daemon_selector_labels(builder.name, daemon.id)
    labels = {**child_labels(builder.name, "daemon"), **selector}
    if daemon.pool is not None:
        labels[LABEL_POOL] = pool_slug(daemon.pool.platform)
    annotations = {**spec.pod_annotations, ANNOTATION_CONFIG_HASH: config_hash}
    if spec.metrics.enabled:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            }
        )
    if tls_hash:
        annotations[ANNOTATION_TLS_HASH] = tls_hash
    meta = object_meta(builder, ChildNames(builder.name).daemon(daemon.id), labels)
    if idle_since:
        # Asleep (idleTimeout): no pod, the cache claim kept; see idle.py.
        meta["annotations"] = {ANNOTATION_IDLE_SINCE: idle_since}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 0 if idle_since else 1,
            "revisionHistoryLimit": 3,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**spec.pod_labels, **labels}, "annotations": annotations},
                "spec": _pod_spec(builder, daemon),
            },
        },
    }
