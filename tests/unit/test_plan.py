"""plan: desired vs live → actions, drift, noCreate and noRecreate. Pure, no cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from buildkit_operator.model import Builder
from buildkit_operator.plan import Plan, diff, plan
from buildkit_operator.render import render_builder, server_sans
from buildkit_operator.tls import ensure_tls

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": "u-1"},
            "spec": spec,
        }
    )


_BUNDLE = ensure_tls({}, name="team-a", server_sans=server_sans(make()), now=NOW)


def rendered(b: Builder) -> list[dict[str, Any]]:
    return render_builder(b, _BUNDLE)


def live_from(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the API server would hand back: our objects plus fields it defaults."""
    live = {}
    for obj in copy.deepcopy(objects):
        obj["metadata"]["resourceVersion"] = "1"
        obj["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
        if obj["kind"] == "Deployment":
            obj["spec"]["progressDeadlineSeconds"] = 600
            container = obj["spec"]["template"]["spec"]["containers"][0]
            container["terminationMessagePath"] = "/dev/termination-log"
            container["imagePullPolicy"] = "IfNotPresent"
            obj["status"] = {"readyReplicas": 1}
        if obj["kind"] == "Service":
            obj["spec"]["clusterIP"] = "10.96.0.10"
        live[(obj["kind"], obj["metadata"]["name"])] = obj
    return live


def verbs(p: Plan) -> set[tuple[str, str, str]]:
    return {(a.verb, a.kind, a.name) for a in p.actions}


def test_nothing_live_creates_every_child_in_order() -> None:
    b = make(replicas=2)
    p = plan(b.spec, rendered(b), {})
    kinds = [a.kind for a in p.actions]
    assert all(a.verb == "create" for a in p.actions)
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert kinds.index("Secret") < kinds.index("Deployment")
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Deployment")
    assert len(p.actions) == 1 + 3 + 2 + 2 + 1


def test_converged_world_plans_nothing_despite_server_defaults() -> None:
    b = make(replicas=2)
    desired = rendered(b)
    p = plan(b.spec, desired, live_from(desired), owned=live_from(desired).keys())
    assert p.actions == () and p.converged


def test_hand_edit_is_patched_back() -> None:
    b = make()
    desired = rendered(b)
    live = live_from(desired)
    live[("Deployment", "team-a-0")]["spec"]["template"]["spec"]["containers"][0]["image"] = "x"
    p = plan(b.spec, desired, live)
    assert verbs(p) == {("patch", "Deployment", "team-a-0")}
    assert "containers[buildkitd].image" in p.actions[0].reason


def test_field_removed_from_spec_is_drift() -> None:
    """A dropped nodeSelector leaves nothing to compare field by field; the applied hash
    annotation catches it, so server-side apply removes the field."""
    before = rendered(make(nodeSelector={"disk": "ssd"}))
    after = rendered(make())
    p = plan(make().spec, after, live_from(before))
    assert ("patch", "Deployment", "team-a-0") in verbs(p)


def test_rootless_switch_recreates_the_workload() -> None:
    live = live_from(rendered(make(rootless=True)))
    b = make(rootless=False)
    p = plan(b.spec, rendered(b), live)
    assert ("recreate", "Deployment", "team-a-0") in verbs(p)


def test_storage_class_change_recreates_claim_and_its_daemon() -> None:
    live = live_from(rendered(make(cache={"storageClassName": "slow"})))
    b = make(cache={"storageClassName": "fast"})
    p = plan(b.spec, rendered(b), live)
    assert ("recreate", "PersistentVolumeClaim", "team-a-cache-0") in verbs(p)
    assert ("recreate", "Deployment", "team-a-0") in verbs(p)


def test_claim_grows_in_place_but_never_shrinks() -> None:
    live = live_from(rendered(make(cache={"size": "10Gi"})))
    grow = make(cache={"size": "20Gi"})
    assert ("patch", "PersistentVolumeClaim", "team-a-cache-0") in verbs(
        plan(grow.spec, rendered(grow), live)
    )
    shrink = make(cache={"size": "5Gi"})
    assert ("recreate", "PersistentVolumeClaim", "team-a-cache-0") in verbs(
        plan(shrink.spec, rendered(shrink), live)
    )


def test_scale_down_deletes_daemon_but_retains_cache() -> None:
    live = live_from(rendered(make(replicas=2)))
    b = make(replicas=1)
    p = plan(b.spec, rendered(b), live, owned=live.keys())
    assert ("delete", "Deployment", "team-a-1") in verbs(p)
    assert not any(a.kind == "PersistentVolumeClaim" and a.verb == "delete" for a in p.actions)
    b = make(replicas=1, cache={"retain": False})
    p = plan(b.spec, rendered(b), live, owned=live.keys())
    assert ("delete", "PersistentVolumeClaim", "team-a-cache-1") in verbs(p)


def test_no_create_without_workload_creates_nothing() -> None:
    b = make(noCreate=True, replicas=2)
    p = plan(b.spec, rendered(b), {})
    assert p.actions == ()
    assert p.missing == ("Deployment team-a-0", "Deployment team-a-1")


def test_no_create_with_workload_serves_it() -> None:
    b = make(noCreate=True)
    desired = rendered(b)
    live = {k: v for k, v in live_from(desired).items() if k[0] == "Deployment"}
    p = plan(b.spec, desired, live)
    assert p.missing == ()
    assert ("create", "Service", "team-a") in verbs(p)
    assert not any(a.kind == "Deployment" and a.verb == "create" for a in p.actions)


def test_no_recreate_holds_every_change_and_lists_it() -> None:
    live = live_from(rendered(make(noRecreate=True, replicas=2)))
    b = make(noRecreate=True, replicas=1, image="other", rootless=False)
    p = plan(b.spec, rendered(b), live, owned=live.keys())
    assert p.actions == ()
    assert any(d.startswith("Deployment team-a-0: ") and "image" in d for d in p.drifted)
    assert "Deployment team-a-1: not in the spec" in p.drifted


def test_no_recreate_still_creates_what_is_missing() -> None:
    b = make(noRecreate=True)
    desired = rendered(b)
    live = live_from(desired)
    del live[("Service", "team-a")]
    assert verbs(plan(b.spec, desired, live)) == {("create", "Service", "team-a")}


def test_terminating_object_is_waited_for() -> None:
    b = make()
    desired = rendered(b)
    live = live_from(desired)
    live[("Deployment", "team-a-0")]["metadata"]["deletionTimestamp"] = "2026-11-24T00:00:00Z"
    p = plan(b.spec, desired, live)
    assert p.waiting == ("Deployment team-a-0",) and not p.converged
    assert p.actions == ()


@pytest.mark.parametrize(
    ("want", "have", "drift"),
    [
        ({"a": "50Gi"}, {"a": "50Gi", "b": 1}, []),
        ({"q": "1.5Gi"}, {"q": "1536Mi"}, []),
        ({"q": "1Gi"}, {"q": "1G"}, ["q"]),
        ({"l": [{"name": "x", "v": 1}]}, {"l": [{"name": "y"}, {"name": "x", "v": 1}]}, []),
        ({"l": [{"name": "x", "v": 1}]}, {"l": [{"name": "x", "v": 2}]}, ["l[x].v"]),
        ({"args": ["a", "b"]}, {"args": ["a"]}, ["args"]),
        ({"m": {"k": "v"}}, {}, ["m"]),
        ({"m": {}}, {}, []),
    ],
)
def test_diff(want: Any, have: Any, drift: list[str]) -> None:
    assert diff(want, have) == drift
