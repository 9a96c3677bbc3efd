"""admitted: a value a mutating admission keeps is left as admitted; a new intent and a
person's edit are still written. Pure, no cluster.

The live objects are what the API server returns after the operator's apply went through a
mutating admission (the admission's value, the operator still owning the field in its
``managedFields`` entry), or after a person's edit (the field moved to their manager). The
same against the real API server and a MutatingAdmissionPolicy: tests/integration/
test_admission_rewrites.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, cast

from buildkit_operator.api import Builder
from buildkit_operator.api.daemons import daemons as daemon_slots
from buildkit_operator.cluster import Kube
from buildkit_operator.pki import ensure_tls
from buildkit_operator.reconcile import admitted
from buildkit_operator.reconcile.daemon_state import daemon_state
from buildkit_operator.reconcile.plan import plan
from buildkit_operator.reconcile.report import record_rewrites
from buildkit_operator.reconcile.status import compute_status
from buildkit_operator.reconcile.types import Plan
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, tzinfo=UTC)
UID = "u-1"
MANAGER = "buildkit-operator"
IMAGE = "spec.template.spec.containers[buildkitd].image"
MIRROR = "mirror.example.internal/moby/buildkit:v0"


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": UID},
            "spec": {"cache": {"type": "ephemeral"}, **spec},
        }
    )


_BUNDLE = ensure_tls({}, name="team-a", server_sans=server_sans(make()), now=NOW)


def _fields(value: Any) -> dict[str, Any]:
    """The fieldsV1 set an apply of ``value`` records (lists keyed by name, as containers)."""
    if isinstance(value, dict):
        return {f"f:{k}": _fields(v) for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value):
        return {f'k:{{"name":"{i["name"]}"}}': {".": {}, **_fields(i)} for i in value}
    return {}


def applied(want: dict[str, Any], manager: str = MANAGER) -> dict[str, Any]:
    """``want`` as the API server returns it after ``manager``'s apply."""
    have = copy.deepcopy(want)
    body = {k: v for k, v in want.items() if k not in ("apiVersion", "kind")}
    entry = {"manager": manager, "operation": "Apply", "fieldsV1": _fields(body)}
    have["metadata"]["managedFields"] = [entry]
    return have


def decide(b: Builder, live: dict[tuple[str, str], dict[str, Any]]) -> Plan:
    return plan(b.spec, render_builder(b, _BUNDLE), live, builder="team-a", uid=UID, label="team-a")


def as_created(b: Builder) -> dict[tuple[str, str], dict[str, Any]]:
    """Every child as the operator creates it (digest and all), as the API server keeps it."""
    return {a.key: applied(dict(copy.deepcopy(a.obj))) for a in decide(b, {}).actions}


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "buildkitd")


def test_children_created_as_planned_are_at_rest() -> None:
    b = make()
    p = decide(b, as_created(b))
    assert p.actions == () and p.rewritten == ()


def test_an_image_an_admission_rewrote_in_the_operators_write_is_left_as_admitted() -> None:
    b = make()
    live = as_created(b)
    _container(live[("Deployment", "team-a-0")])["image"] = MIRROR
    p = decide(b, live)
    assert p.actions == ()
    assert p.rewritten == (f"Deployment team-a-0: {IMAGE}",)


def test_a_new_intent_is_written_though_the_field_was_rewritten() -> None:
    b = make()
    live = as_created(b)
    _container(live[("Deployment", "team-a-0")])["image"] = MIRROR
    p = decide(make(image="docker.io/moby/buildkit:v0.99.0"), live)
    (action,) = [a for a in p.actions if a.kind == "Deployment"]
    assert action.verb == "patch" and IMAGE in action.paths
    assert p.rewritten == ()


def test_a_persons_edit_of_a_rewritten_field_is_repaired() -> None:
    b = make()
    live = as_created(b)
    dep = live[("Deployment", "team-a-0")]
    _container(dep)["image"] = "registry.invalid/other:1"
    # The edit moved the field to the person's manager.
    fields = dep["metadata"]["managedFields"][0]["fieldsV1"]
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"buildkitd"}']
    del container["f:image"]
    p = decide(b, live)
    (action,) = p.actions
    assert (action.verb, action.name, action.paths) == ("patch", "team-a-0", (IMAGE,))


def test_objects_written_before_digests_are_repaired_and_not_rewritten_for_the_digest() -> None:
    b = make()
    live = {}
    for key, have in as_created(b).items():
        have["metadata"].get("annotations", {}).pop("buildkit.dev/intent", None)
        del have["metadata"]["managedFields"]
        live[key] = applied(have)
    assert decide(b, live).actions == ()
    _container(live[("Deployment", "team-a-0")])["image"] = MIRROR
    (action,) = decide(b, live).actions
    assert action.paths == (IMAGE,)
    assert action.obj["metadata"]["annotations"]["buildkit.dev/intent"]


INTENT = "metadata.annotations.buildkit.dev/intent"


def test_a_digest_edited_by_hand_is_put_back_even_under_no_recreate() -> None:
    # The digest runs nothing, like the record of the spec last applied: noRecreate puts it
    # back too, and a wrong one must not leave the next admission rewrite taken for drift.
    for b in (make(), make(noRecreate=True)):
        live = as_created(b)
        live[("Deployment", "team-a-0")]["metadata"]["annotations"]["buildkit.dev/intent"] = "x"
        p = decide(b, live)
        (action,) = p.actions
        assert (action.verb, action.name, action.paths) == ("patch", "team-a-0", (INTENT,))
        assert p.drifted == ()


def test_secrets_carry_no_digest_and_are_always_repaired() -> None:
    b = make()
    created = {a.key: a.obj for a in decide(b, {}).actions}
    secret = created[("Secret", "team-a-server-tls")]
    assert "buildkit.dev/intent" not in (secret["metadata"].get("annotations") or {})
    live = as_created(b)
    live[("Secret", "team-a-server-tls")]["data"]["cert.pem"] = "b3RoZXI="
    (action,) = decide(b, live).actions
    assert action.key == ("Secret", "team-a-server-tls")


def test_owns_reads_keys_with_dots_list_items_and_atomic_fields() -> None:
    fields = {
        "f:metadata": {"f:annotations": {"f:buildkit.dev/tls-hash": {}}},
        "f:spec": {
            "f:ports": {'k:{"port":1234,"protocol":"TCP"}': {".": {}, "f:name": {}}},
            "f:containers": {'k:{"name":"buildkitd"}': {"f:args": {}}},
        },
    }
    assert admitted.owns(fields, "metadata.annotations.buildkit.dev/tls-hash")
    assert not admitted.owns(fields, "metadata.annotations.buildkit.dev/other")
    assert admitted.owns(fields, "spec.ports[1234,TCP].name")
    assert not admitted.owns(fields, "spec.ports[1235,TCP].name")
    assert admitted.owns(fields, "spec.containers[buildkitd].args[2]")
    assert not admitted.owns(fields, "spec.containers[buildkitd].image")


def test_the_status_says_so_while_ready() -> None:
    b = make()
    live = as_created(b)
    dep = live[("Deployment", "team-a-0")]
    _container(dep)["image"] = MIRROR
    dep["metadata"]["generation"] = 1
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    p = decide(b, live)
    assert p.rewritten
    states = [daemon_state("team-a-0", dep, d) for d in daemon_slots(b)]
    status = compute_status(b, p, states, certificate_not_after=None, previous={}, now=NOW)
    assert status["phase"] == "Ready"
    (drifted,) = [c for c in status["conditions"] if c["type"] == "Drifted"]
    assert drifted["status"] == "False" and drifted["reason"] == "AdmissionRewrote"
    assert IMAGE in drifted["message"] and "admission" in drifted["message"]


class _Events:
    """Records the Events a report would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.sent.append((type_, reason, message))


def _with_drifted(reason: str, message: str) -> dict[str, Any]:
    return {
        "conditions": [{"type": "Drifted", "status": "False", "reason": reason, "message": message}]
    }


def test_one_event_when_the_rewritten_fields_first_show_and_none_at_rest() -> None:
    now = _with_drifted("AdmissionRewrote", admitted.describe([f"Deployment team-a-0: {IMAGE}"]))
    before = _with_drifted("InSync", "live objects match the spec")
    kube = _Events()
    record_rewrites(cast(Kube, kube), {}, before, now, written=True)
    ((type_, _reason, message),) = kube.sent
    # Not a failure: the Builder runs, as the cluster's admission wants it.
    assert type_ == "Normal" and IMAGE in message and "admission" in message
    record_rewrites(cast(Kube, kube), {}, now, now, written=True)
    record_rewrites(cast(Kube, kube), {}, before, now, written=False)
    record_rewrites(cast(Kube, kube), {}, now, before, written=True)
    assert len(kube.sent) == 1
