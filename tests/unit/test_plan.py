"""plan: decisions on ownership, noCreate, noRecreate and caches. Pure, no cluster.

The live objects here are written by hand in the shape the API server returns, each with
only what the decision under test turns on. Convergence over every spec field, against
the live objects of the real API server, is proven by tests/integration/test_convergence.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from buildkit_operator.api import Builder
from buildkit_operator.pki import ensure_tls
from buildkit_operator.reconcile.plan import ownership, plan
from buildkit_operator.reconcile.types import Plan
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, tzinfo=UTC)
UID = "u-1"
OURS = {"apiVersion": "buildkit.dev/v1alpha1", "kind": "Builder", "name": "team-a", "uid": UID}
LABELS = {"app.kubernetes.io/managed-by": "buildkit-operator", "buildkit.dev/builder": "team-a"}


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": UID},
            "spec": spec,
        }
    )


_BUNDLE = ensure_tls({}, name="team-a", server_sans=server_sans(make()), now=NOW)


def decide(b: Builder, live: dict[tuple[str, str], dict[str, Any]]) -> Plan:
    desired = render_builder(b, _BUNDLE)
    return plan(b.spec, desired, live, builder="team-a", uid=UID, label="team-a")


def obj(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    meta = fields.pop("metadata", {})
    return {"kind": kind, "metadata": {"name": name, "namespace": "ci", **meta}, **fields}


def verbs(p: Plan) -> set[tuple[str, str, str]]:
    return {(a.verb, a.kind, a.name) for a in p.actions}


def test_nothing_live_creates_every_child_in_order() -> None:
    p = decide(make(replicas=2), {})
    kinds = [a.kind for a in p.actions]
    assert all(a.verb == "create" for a in p.actions)
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert kinds.index("Secret") < kinds.index("Deployment")
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Deployment")
    assert len(p.actions) == 1 + 3 + 2 + 2 + 2 + 1


def test_objects_of_our_names_that_are_someone_elses_are_left_alone() -> None:
    live = {
        ("ConfigMap", "team-a-config"): obj("ConfigMap", "team-a-config", data={"x": "1"}),
        ("Service", "team-a"): obj("Service", "team-a", spec={"ports": [{"port": 80}]}),
    }
    p = decide(make(), live)
    touched = {(a.kind, a.name) for a in p.actions}
    assert ("ConfigMap", "team-a-config") not in touched
    assert ("Service", "team-a") not in touched
    assert any("ConfigMap team-a-config" in c for c in p.conflicts)
    assert any("Service team-a " in c for c in p.conflicts)
    # The daemon would mount someone else's config: it waits; the rest goes on.
    assert ("Deployment", "team-a-0") not in touched
    assert ("Secret", "team-a-ca") in touched


def test_our_labels_alone_do_not_make_an_object_ours() -> None:
    copied = obj("Service", "team-a", metadata={"labels": LABELS}, spec={})
    assert ownership(copied, builder="team-a", uid=UID, label="team-a") == "foreign"
    claim = obj("PersistentVolumeClaim", "team-a-cache-0", metadata={"labels": LABELS})
    assert ownership(claim, builder="team-a", uid=UID, label="team-a") == "ours"


def test_a_deleted_namesakes_children_are_removed_by_uid_and_waited_for() -> None:
    """The garbage collector would remove them, but may back off for minutes after an API
    server restart: the operator deletes its own leftovers (with the uid as precondition),
    never a claim, and nothing under noCreate or noRecreate."""
    old = {**OURS, "uid": "old", "controller": True}
    meta = {"ownerReferences": [old], "uid": "svc-old"}
    live = {
        ("Service", "team-a"): obj("Service", "team-a", metadata=meta),
        ("PersistentVolumeClaim", "team-a-cache-0"): obj(
            "PersistentVolumeClaim", "team-a-cache-0", metadata={"ownerReferences": [old]}
        ),
    }
    p = decide(make(), live)
    deletes = [a for a in p.actions if a.verb == "delete"]
    assert [(a.kind, a.name) for a in deletes] == [("Service", "team-a")]
    assert deletes[0].obj["metadata"]["uid"] == "svc-old"
    assert not any(
        (a.kind, a.name) == ("Service", "team-a") and a.verb != "delete" for a in p.actions
    )
    assert not any(a.kind == "PersistentVolumeClaim" and a.verb == "delete" for a in p.actions)
    assert len(p.waiting) == 2 and not p.conflicts
    for held in (make(noCreate=True), make(noRecreate=True)):
        assert not [a for a in decide(held, live).actions if a.verb == "delete"]


def test_owned_objects_no_longer_desired_are_deleted_but_never_a_claim() -> None:
    owned = {"metadata": {"ownerReferences": [OURS], "labels": LABELS}}
    live = {
        ("Deployment", "team-a-1"): obj("Deployment", "team-a-1", **owned),
        ("PersistentVolumeClaim", "team-a-cache-1"): obj(
            "PersistentVolumeClaim", "team-a-cache-1", **owned
        ),
        ("Deployment", "someone-else"): obj("Deployment", "someone-else"),
    }
    p = decide(make(replicas=1, cache={"retain": False}), live)
    assert ("delete", "Deployment", "team-a-1") in verbs(p)
    assert not any(a.verb == "delete" and a.kind == "PersistentVolumeClaim" for a in p.actions)
    assert not any(a.name == "someone-else" for a in p.actions)


def test_no_create_without_workload_creates_nothing() -> None:
    p = decide(make(noCreate=True, replicas=2), {})
    assert p.actions == ()
    assert p.missing == ("Deployment team-a-0", "Deployment team-a-1")


def _users_deployment(selector: dict[str, str]) -> dict[str, Any]:
    """As ``kubectl create deployment team-a-0 --image=busybox`` leaves it."""
    return obj(
        "Deployment",
        "team-a-0",
        metadata={"uid": "theirs", "labels": {"app": "team-a-0"}},
        spec={
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "busybox", "image": "busybox"}]},
            },
        },
    )


def test_no_create_never_deletes_or_recreates_what_it_adopts() -> None:
    live = {("Deployment", "team-a-0"): _users_deployment({"app": "team-a-0"})}
    p = decide(make(noCreate=True), live)
    assert not any(a.kind == "Deployment" for a in p.actions)
    assert any(d.startswith("Deployment team-a-0: spec.selector") for d in p.drifted)
    assert ("create", "Service", "team-a") in verbs(p)


def test_no_create_applies_in_place_changes_without_taking_ownership() -> None:
    selector = {
        "app.kubernetes.io/name": "buildkitd",
        "app.kubernetes.io/instance": "team-a",
        "buildkit.dev/daemon": "0",
    }
    live = {("Deployment", "team-a-0"): _users_deployment(selector)}
    p = decide(make(noCreate=True), live)
    [action] = [a for a in p.actions if a.kind == "Deployment"]
    assert action.verb == "patch"
    assert "ownerReferences" not in action.obj["metadata"]


def test_claim_that_cannot_shrink_or_change_class_is_kept_and_reported() -> None:
    live = {
        ("PersistentVolumeClaim", "team-a-cache-0"): obj(
            "PersistentVolumeClaim",
            "team-a-cache-0",
            metadata={"labels": LABELS},
            spec={
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem",
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "50Gi"}},
            },
        )
    }
    p = decide(make(cache={"size": "20Gi", "storageClassName": "fast-ssd"}), live)
    assert not any(a.kind == "PersistentVolumeClaim" for a in p.actions if a.verb != "patch")
    for action in p.actions:
        if action.kind == "PersistentVolumeClaim":
            assert action.obj["spec"]["storageClassName"] == "standard"
            assert action.obj["spec"]["resources"]["requests"]["storage"] == "50Gi"
    [notice] = p.kept
    assert "50Gi" in notice and "fast-ssd" in notice and "delete the claim" in notice


def test_no_recreate_holds_changes_but_not_certificate_renewal() -> None:
    owned = {"ownerReferences": [OURS], "labels": LABELS}
    stale_secret = obj("Secret", "team-a-server-tls", metadata=owned, type="Opaque", data={})
    live = {
        ("Secret", "team-a-server-tls"): stale_secret,
        ("Service", "team-a"): obj("Service", "team-a", metadata=owned, spec={"type": "NodePort"}),
    }
    p = decide(make(noRecreate=True), live)
    assert ("patch", "Secret", "team-a-server-tls") in verbs(p)
    assert ("patch", "Service", "team-a") not in verbs(p)
    assert any(d.startswith("Service team-a: spec.type") for d in p.drifted)


def test_no_recreate_keeps_the_record_of_the_applied_spec_up_to_date() -> None:
    """The spec last applied, kept on the ConfigMap, runs nothing: noRecreate writes it (a
    spec edit that changes nothing that runs is no drift, a hand edit of it is put back),
    but not with a config change it holds."""
    b = make(noRecreate=True)
    spec = {"noRecreate": True}

    def live_config(annotation: str, data: dict[str, str] | None = None) -> dict[Any, Any]:
        (want,) = [
            o for o in render_builder(b, _BUNDLE, applied_spec=spec) if o["kind"] == "ConfigMap"
        ]
        meta = {**want["metadata"], "annotations": {"buildkit.dev/applied-spec": annotation}}
        return {("ConfigMap", "team-a-config"): {**want, "metadata": meta, **(data or {})}}

    def decide_with_record(live: dict[Any, Any]) -> Plan:
        desired = render_builder(b, _BUNDLE, applied_spec=spec)
        return plan(b.spec, desired, live, builder="team-a", uid=UID, label="team-a")

    edited = decide_with_record(live_config('{"edited":true}'))
    assert ("patch", "ConfigMap", "team-a-config") in verbs(edited)
    assert not any(d.startswith("ConfigMap") for d in edited.drifted)
    held = decide_with_record(live_config('{"edited":true}', {"data": {"buildkitd.toml": "x"}}))
    assert ("patch", "ConfigMap", "team-a-config") not in verbs(held)
    assert any(d.startswith("ConfigMap team-a-config: data") for d in held.drifted)


def test_terminating_object_is_waited_for() -> None:
    dying = obj("Deployment", "team-a-0", metadata={"deletionTimestamp": "2026-11-24T00:00:00Z"})
    p = decide(make(), {("Deployment", "team-a-0"): dying})
    assert p.waiting and not p.converged
    assert ("Deployment", "team-a-0") not in {(a.kind, a.name) for a in p.actions}


def test_someone_elses_ca_holds_the_whole_certificate_set() -> None:
    """Certificates signed by a CA that cannot be stored would be issued on every pass."""
    live = {("Secret", "team-a-ca"): obj("Secret", "team-a-ca", type="Opaque", data={})}
    p = decide(make(), live)
    assert not any(a.kind == "Secret" for a in p.actions)
    assert not any(a.kind == "Deployment" for a in p.actions)
    assert any("Secret team-a-ca" in c for c in p.conflicts)
    assert ("create", "Service", "team-a") in verbs(p)


def test_a_secret_the_daemons_mount_is_never_deleted() -> None:
    """tls.mode auto → secret naming the server Secret the Builder had (a natural way to
    freeze a certificate): that Secret is no longer rendered, but the daemons mount it."""
    auto = make()
    live = {
        (o["kind"], o["metadata"]["name"]): {
            **o,
            "metadata": {**o["metadata"], "uid": f"uid-{o['metadata']['name']}"},
        }
        for o in render_builder(auto, _BUNDLE)
    }
    frozen = make(tls={"mode": "secret", "secretName": "team-a-server-tls"})
    desired = render_builder(frozen, None, external_tls_hash="abc")
    p = plan(frozen.spec, desired, live, builder="team-a", uid=UID, label="team-a")
    assert ("delete", "Secret", "team-a-server-tls") not in verbs(p)
    # What nothing mounts any more goes.
    assert ("delete", "Secret", "team-a-ca") in verbs(p)
    assert ("delete", "Secret", "team-a-client-tls") in verbs(p)


def test_replacing_sets_the_outermost_list_whole() -> None:
    from buildkit_operator.reconcile.apply import replacing

    service = {"spec": {"ports": [{"port": 1234}], "type": "ClusterIP"}}
    assert replacing(service, ["spec.ports"]) == {"spec": {"ports": [{"port": 1234}]}}
    workload = {"spec": {"template": {"spec": {"containers": [{"name": "b", "ports": []}]}}}}
    assert replacing(workload, ["spec.template.spec.containers[b].ports"]) == workload


def test_every_delete_and_recreate_names_the_live_objects_uid() -> None:
    """A recreate deleted by name alone: an object made anew meanwhile (by someone else)
    could be deleted in its place."""

    def live_of(b: Builder) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (o["kind"], o["metadata"]["name"]): {
                **o,
                "metadata": {**o["metadata"], "uid": f"uid-{o['kind']}-{o['metadata']['name']}"},
            }
            for o in render_builder(b, _BUNDLE)
        }

    untls = decide(make(tls={"mode": "disabled"}), live_of(make()))
    live = live_of(make())
    workload = live[("Deployment", "team-a-0")]
    workload["spec"] = {**workload["spec"], "selector": {"matchLabels": {"other": "x"}}}
    reselected = decide(make(), live)
    removing = [
        a for p in (untls, reselected) for a in p.actions if a.verb in ("delete", "recreate")
    ]
    assert {(a.verb, a.name) for a in removing} >= {
        ("delete", "team-a-ca"),
        ("recreate", "team-a-0"),
    }
    for action in removing:
        assert action.uid == f"uid-{action.kind}-{action.name}"
