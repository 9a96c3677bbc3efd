"""securityProfile userns holds only where the API server keeps ``hostUsers: false``: a
daemon whose Deployment comes back without it is scaled to zero at once and reported, never
left running as root on the node. Pure, no cluster; the real API server dropping the field
through a MutatingAdmissionPolicy is tests/integration/test_userns.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from buildkit_operator.api import Builder
from buildkit_operator.pki import ensure_tls
from buildkit_operator.reconcile.holds import hold_disruptions
from buildkit_operator.reconcile.plan import plan
from buildkit_operator.reconcile.types import Key, Plan
from buildkit_operator.reconcile.userns import describe, scale_to_zero, without_user_namespace
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 12, 3, tzinfo=UTC)
UID = "u-1"


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": UID},
            "spec": {"securityProfile": "userns", **spec},
        }
    )


_BUNDLE = ensure_tls({}, name="team-a", server_sans=server_sans(make()), now=NOW)


def rendered(b: Builder) -> list[dict[str, Any]]:
    return render_builder(b, _BUNDLE)


def as_returned(b: Builder, **pod: Any) -> dict[Key, dict[str, Any]]:
    """Every child as the API server returned it, the daemon's pod spec changed by ``pod``
    (a value None removes the field, as a cluster without user namespaces does)."""
    live = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in rendered(b)}
    template = live[("Deployment", "team-a-0")]["spec"]["template"]["spec"]
    for key, value in pod.items():
        if value is None:
            template.pop(key, None)
        else:
            template[key] = value
    return live


def decide(b: Builder, live: dict[Key, dict[str, Any]]) -> Plan:
    return plan(b.spec, rendered(b), live, builder="team-a", uid=UID, label="team-a")


def test_the_rendered_daemon_asks_for_its_own_user_namespace() -> None:
    (dep,) = [o for o in rendered(make()) if o["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["hostUsers"] is False


def test_a_daemon_returned_without_host_users_is_scaled_to_zero_at_once() -> None:
    b = make()
    after = as_returned(b, hostUsers=None)
    (action,) = scale_to_zero(rendered(b), after)
    assert (action.verb, action.name, action.obj) == (
        "scale",
        "team-a-0",
        {"spec": {"replicas": 0}},
    )
    # Never held for builds in flight, whatever drain says.
    kept, held = hold_disruptions(b.spec, [action], {}, {}, {}, NOW, [])
    assert kept == [action] and held == []
    # Kept as returned, or already at zero: nothing more to scale.
    assert scale_to_zero(rendered(b), as_returned(b)) == []
    zero = as_returned(b, hostUsers=None)
    zero[("Deployment", "team-a-0")]["spec"]["replicas"] = 0
    assert scale_to_zero(rendered(b), zero) == []
    # Other profiles ask for no user namespace.
    rootless = make(securityProfile="rootless")
    assert scale_to_zero(rendered(rootless), as_returned(rootless, hostUsers=None)) == []


def test_a_live_daemon_without_host_users_stays_at_zero_and_is_not_rewritten() -> None:
    """A pass over a daemon the API server keeps without hostUsers: scaled to zero if it
    runs; once at zero, nothing is written (rewriting the field the server drops would write
    for ever), and the daemon is named for the status."""
    b = make()
    live = as_returned(b, hostUsers=None)
    first = decide(b, live)
    assert [(a.verb, a.name) for a in first.actions] == [("scale", "team-a-0")]
    live[("Deployment", "team-a-0")]["spec"]["replicas"] = 0
    assert decide(b, live).actions == ()
    assert decide(b, live).drifted == ()
    assert without_user_namespace(rendered(b), live) == ["team-a-0"]
    # noRecreate holds no scale to zero.
    held = make(noRecreate=True)
    live = as_returned(held, hostUsers=None)
    assert [(a.verb, a.name) for a in decide(held, live).actions] == [("scale", "team-a-0")]


def test_host_users_set_to_true_by_hand_is_drift_put_back() -> None:
    b = make()
    live = as_returned(b, hostUsers=True)
    p = decide(b, live)
    assert [(a.verb, a.name) for a in p.actions] == [("patch", "team-a-0")]
    assert "spec.template.spec.hostUsers" in p.actions[0].paths
    assert p.actions[0].obj["spec"]["template"]["spec"]["hostUsers"] is False
    assert without_user_namespace(rendered(b), live) == []


def test_the_report_names_the_field_and_the_kubernetes_version() -> None:
    (line,) = describe(["team-a-0"], "v1.36.3")
    assert "Deployment team-a-0" in line
    assert "spec.template.spec.hostUsers" in line and "Kubernetes v1.36.3" in line
    assert "scaled to zero" in line


def test_a_userns_daemon_is_created_at_zero_and_scaled_up_once_kept() -> None:
    """No pod starts before the API server has shown it keeps hostUsers: the Deployment is
    created at zero; the next pass, seeing it kept, gives it its replicas (a change that
    stops nothing)."""
    b = make(replicas=2)
    created = {a.name: a.obj for a in decide(b, {}).actions if a.kind == "Deployment"}
    assert {name: obj["spec"]["replicas"] for name, obj in created.items()} == {
        "team-a-0": 0,
        "team-a-1": 0,
    }
    live = as_returned(b)
    for name in created:
        live[("Deployment", name)]["spec"]["replicas"] = 0
    p = decide(b, live)
    assert sorted((a.verb, a.name, a.paths) for a in p.actions) == [
        ("patch", "team-a-0", ("spec.replicas",)),
        ("patch", "team-a-1", ("spec.replicas",)),
    ]
    assert not any(a.stops_daemon for a in p.actions)
    # Other profiles are created with their replicas.
    rootless = make(securityProfile="rootless")
    (dep,) = [a.obj for a in decide(rootless, {}).actions if a.kind == "Deployment"]
    assert dep["spec"]["replicas"] == 1
