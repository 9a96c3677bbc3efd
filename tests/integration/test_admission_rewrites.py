"""A mutating admission that rewrites what the operator applies, against the real API
server: a MutatingAdmissionPolicy pointing the buildkitd image at an internal mirror, or
setting the container's memory limit. The API server keeps the admission's value whatever
the operator sends, so writing the spec again changes nothing: the Builder must settle
(Ready, the daemon rolled out as admitted), write nothing more, and say once, in an Event,
which fields an admission changed. A person's edit of such a field afterwards is still
repaired."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import (
    builder,
    child_writes,
    condition,
    events_of,
    get,
    patch_spec,
    settle,
    wait_until,
    writes_in,
)
from operator_process import OperatorProcess
from policy_support import mutating_policy

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

EPHEMERAL = {"type": "ephemeral"}
MIRROR = "mirror.example.internal/"
UPSTREAM = "docker.io/"
IMAGE = "spec.template.spec.containers[buildkitd].image"
MEMORY = "spec.template.spec.containers[buildkitd].resources.limits.memory"
# Long enough for several of the operator's requeues and child watch events.
WINDOW = 20.0
# The index of the buildkitd container, for a JSON Patch path.
_INDEX = "object.spec.template.spec.containers.map(c, c.name).indexOf('buildkitd')"
_BUILDKITD = "object.spec.template.spec.containers.exists(c, c.name == 'buildkitd'"
_CONTAINER = "/spec/template/spec/containers/"


def _image_mutation() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rewrites an image pulled from docker.io to the mirror (an image named elsewhere is
    left alone, so a hand edit naming another registry stays as edited)."""
    conditions = [
        {
            "name": "upstream-image",
            "expression": f"{_BUILDKITD} && c.image.startsWith('{UPSTREAM}'))",
        }
    ]
    patch = (
        f'[JSONPatch{{op: "replace", path: "{_CONTAINER}" + string({_INDEX}) + "/image", '
        f"value: object.spec.template.spec.containers[{_INDEX}].image"
        f'.replace("{UPSTREAM}", "{MIRROR}")}}]'
    )
    return conditions, {"patchType": "JSONPatch", "jsonPatch": {"expression": patch}}


def _memory_mutation() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sets the buildkitd container's memory limit to 1Gi wherever one is set."""
    conditions = [
        {
            "name": "memory-limit",
            "expression": (
                f"{_BUILDKITD} && has(c.resources) && has(c.resources.limits) && "
                "'memory' in c.resources.limits)"
            ),
        }
    ]
    patch = (
        f'[JSONPatch{{op: "replace", path: "{_CONTAINER}" + string({_INDEX}) + '
        f'"/resources/limits/memory", value: "1Gi"}}]'
    )
    return conditions, {"patchType": "JSONPatch", "jsonPatch": {"expression": patch}}


def _probe(namespace: str) -> dict[str, Any]:
    """A Deployment shaped like a daemon's, for a server-side dry run."""
    labels = {"app.kubernetes.io/managed-by": "buildkit-operator"}
    container = {
        "name": "buildkitd",
        "image": f"{UPSTREAM}moby/buildkit:probe",
        "resources": {"limits": {"memory": "64Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def _admitted(k: Kubectl, namespace: str) -> dict[str, Any]:
    out = k.json("create", "--dry-run=server", "-f", "-", input=json.dumps(_probe(namespace)))
    return dict(out["spec"]["template"]["spec"]["containers"][0])


@pytest.fixture
def mutate(k: Kubectl, namespace: str) -> Iterator[Callable[..., None]]:
    """Puts a policy in force (seen in a dry run) for the test; removed afterwards."""
    made: list[dict[str, Any]] = []

    def put(which: str) -> None:
        name = f"{which}-{namespace}"[:63].rstrip("-")
        conditions, mutation = _image_mutation() if which == "mirror" else _memory_mutation()
        operators = {"app.kubernetes.io/managed-by": "buildkit-operator"}
        objects = mutating_policy(name, namespace, conditions, mutation, object_labels=operators)
        for obj in objects:
            k.apply(obj)
            made.append(obj)

        # The field itself: the server fills in defaults whether the policy acts or not.
        def in_force() -> bool:
            container = _admitted(k, namespace)
            if which == "mirror":
                return bool(container["image"].startswith(MIRROR))
            return bool(container["resources"]["limits"]["memory"] == "1Gi")

        wait_until("the policy in force", in_force, 60)

    yield put
    for obj in reversed(made):
        k("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")


def _buildkitd(k: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    dep = get(k, "deployment", name, namespace)
    (container,) = [
        c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "buildkitd"
    ]
    return dict(container)


def _settled_ready(k: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get(k, "builder", name, namespace)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and status.get("phase") == "Ready" else None

    return dict(wait_until(f"Builder {name} Ready", ready, 120))


def _naming(k: Kubectl, namespace: str, name: str, field: str) -> list[dict[str, Any]]:
    """The Events on the Builder that name ``field`` as an admission's doing."""
    return [
        e
        for e in events_of(k, namespace, name)
        if field in e["message"] and "admission" in e["message"].lower()
    ]


def _assert_quiet(k: Kubectl, cluster: Any, namespace: str, name: str) -> None:
    """No write at all by the operator over the window: not the children, not the
    Builder's status, not an Event."""
    settle(cluster, namespace, timeout=60)
    since = time.time()
    time.sleep(WINDOW)
    writes = writes_in(cluster, namespace, since)
    assert writes == [], f"{len(writes)} writes in {WINDOW}s at rest: {writes[:6]}"


def test_an_image_rewritten_to_a_mirror_settles_ready(
    k: Kubectl, namespace: str, cluster: Any, mutate: Callable[..., None]
) -> None:
    mutate("mirror")
    k.apply(builder("mir", namespace, cache=EPHEMERAL))
    _settled_ready(k, namespace, "mir")
    image = _buildkitd(k, namespace, "mir-0")["image"]
    assert image.startswith(MIRROR), image
    _assert_quiet(k, cluster, namespace, "mir")
    obj = _settled_ready(k, namespace, "mir")
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Progressing")["status"] == "False"
    told = _naming(k, namespace, "mir", IMAGE)
    assert len(told) == 1, [e["message"] for e in events_of(k, namespace, "mir")]
    # The daemon rolled out as admitted: its pod runs the mirror's image.
    dep = get(k, "deployment", "mir-0", namespace)
    assert dep["status"].get("updatedReplicas") == dep["status"].get("readyReplicas") == 1

    # A new intent is written again (and admitted the same way).
    generation = dep["metadata"]["generation"]
    patch_spec(k, "mir", namespace, {"buildkitd": {"maxParallelism": 3}})
    wait_until(
        "the new spec applied",
        lambda: get(k, "deployment", "mir-0", namespace)["metadata"]["generation"] > generation,
        60,
    )
    _settled_ready(k, namespace, "mir")
    assert _buildkitd(k, namespace, "mir-0")["image"].startswith(MIRROR)
    _assert_quiet(k, cluster, namespace, "mir")


def test_a_memory_limit_an_admission_sets_settles_ready(
    k: Kubectl,
    namespace: str,
    cluster: Any,
    mutate: Callable[..., None],
    operator_under_test: OperatorProcess,
) -> None:
    mutate("memory")
    k.apply(builder("mem", namespace, cache=EPHEMERAL, resources={"limits": {"memory": "512Mi"}}))
    _settled_ready(k, namespace, "mem")
    assert _buildkitd(k, namespace, "mem-0")["resources"]["limits"]["memory"] == "1Gi"
    _assert_quiet(k, cluster, namespace, "mem")
    obj = _settled_ready(k, namespace, "mem")
    assert condition(obj, "Progressing")["status"] == "False"
    told = _naming(k, namespace, "mem", MEMORY)
    assert len(told) == 1, [e["message"] for e in events_of(k, namespace, "mem")]
    # What is left as admitted is known again after a restart of the operator, from what
    # the API server keeps. A deleted Service shows the restarted operator's pass: it is
    # made anew, and nothing else is written.
    since = time.time()
    operator_under_test.restart()
    k("delete", "service", "mem", "-n", namespace)
    wait_until("the Service made anew", lambda: get(k, "service", "mem", namespace), 90)
    time.sleep(WINDOW / 4)
    writes = child_writes(cluster, namespace, since)
    assert writes, "no write by the restarted operator"
    others = [w for w in writes if not w.split("?", 1)[0].endswith("/services/mem")]
    assert others == [], f"writes after a restart: {others[:6]}"
    told = _naming(k, namespace, "mem", MEMORY)
    assert len(told) == 1, [e["message"] for e in events_of(k, namespace, "mem")]


def test_a_hand_edit_of_a_rewritten_field_is_repaired(
    k: Kubectl, namespace: str, cluster: Any, mutate: Callable[..., None]
) -> None:
    mutate("mirror")
    k.apply(builder("edt", namespace, cache=EPHEMERAL))
    _settled_ready(k, namespace, "edt")
    admitted = _buildkitd(k, namespace, "edt-0")["image"]
    assert admitted.startswith(MIRROR), admitted
    settle(cluster, namespace, timeout=60)
    # Another registry: the policy leaves it, so only the operator can put it back.
    k("set", "image", "deployment/edt-0", "-n", namespace, "buildkitd=registry.invalid/other:1")
    wait_until(
        "the edited image repaired",
        lambda: _buildkitd(k, namespace, "edt-0")["image"] == admitted,
        60,
    )
    _assert_quiet(k, cluster, namespace, "edt")
    _settled_ready(k, namespace, "edt")
