"""The children's kinds: the order they are best created in, and where the API server
serves each. Shared by the requests (client.py) and the watches (cache.py). The daemons'
pods are watched beside them (OBSERVED), only to read why a daemon does not run: they are
never children a pass writes or deletes."""

from __future__ import annotations

# Kinds of the children, in the order they are best created.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
)
API_VERSIONS = dict((kind, api) for api, kind in CHILD_KINDS)

PATHS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
}

# Kinds only read, never written: the daemons' pods, for their status (reconcile/pods.py).
OBSERVED = {"Pod": ("/api/v1", "pods")}
# Everything the cache lists and watches.
WATCHED = {**PATHS, **OBSERVED}
