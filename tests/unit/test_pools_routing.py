"""Pools, per-daemon routing, security profiles and scale to zero: the pure parts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from buildkit_operator.api import Builder, InvalidBuilder
from buildkit_operator.api.daemons import Activity
from buildkit_operator.api.names import ANNOTATION_IDLE_SINCE
from buildkit_operator.buildkit.routing import pick
from buildkit_operator.pki import ensure_tls
from buildkit_operator.reconcile.idle import decide
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
FIGURES: list[str] = []


def make(spec: dict[str, Any], name: str = "team-a") -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": name, "namespace": "ci", "uid": "u-1"},
            "spec": spec,
        }
    )


def render(builder: Builder) -> list[dict[str, Any]]:
    bundle = ensure_tls({}, name=builder.name, server_sans=server_sans(builder), now=NOW)
    return render_builder(builder, bundle)


def deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"]


POOLS = {
    "cache": {"type": "ephemeral"},
    "pools": [
        {"platform": "linux/amd64", "replicas": 2},
        {"platform": "linux/arm64", "replicas": 1, "resources": {"limits": {"cpu": "2"}}},
    ],
}


# --- pools --------------------------------------------------------------------------------


def test_each_pool_runs_on_its_architecture_and_builds_for_its_platform() -> None:
    found = {}
    for dep in deployments(render(make(POOLS))):
        pod = dep["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        platform = args[args.index("--oci-worker-platform") + 1]
        # The node labels Kubernetes sets from the kubelet's GOOS/GOARCH.
        assert pod["nodeSelector"]["kubernetes.io/arch"] == platform.split("/")[1]
        assert pod["nodeSelector"]["kubernetes.io/os"] == "linux"
        found.setdefault(platform, []).append(dep["metadata"]["name"])
        if platform == "linux/arm64":
            assert pod["containers"][0]["resources"] == {"limits": {"cpu": "2"}}
    assert {p: len(d) for p, d in found.items()} == {"linux/amd64": 2, "linux/arm64": 1}


def test_buildkitd_platforms_keep_meaning_what_the_worker_advertises() -> None:
    spec = {**POOLS, "buildkitd": {"platforms": ["linux/amd64", "linux/arm64"]}}
    for dep in deployments(render(make(spec))):
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert "--oci-worker-platform" not in container["args"]


def test_a_pool_per_platform_only() -> None:
    with pytest.raises(InvalidBuilder, match="pools"):
        make({"pools": [{"platform": "linux/ab/c"}, {"platform": "linux/a_b/c"}]})


@pytest.mark.parametrize("name", ["a" * 253, "x" * 63 + "." + "y" * 63, "team-a", "9lives"])
def test_pool_children_fit_their_kinds_for_any_name(name: str) -> None:
    spec = {
        "pools": [
            {"platform": "linux/amd64", "replicas": 63},
            {"platform": "linux/" + "z" * 40 + "/v8"},
        ]
    }
    objects = render(make(spec, name))
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names)
    for kind, child in names:
        if kind in ("Deployment", "Service"):  # a pod hostname, a DNS-1035 Service name
            assert len(child) <= 63 and DNS_1123_LABEL.match(child), child
        if kind == "Service":
            assert child[0].isalpha(), child


def test_unset_pools_render_the_daemons_as_before() -> None:
    names = [d["metadata"]["name"] for d in deployments(render(make({"replicas": 3})))]
    assert names == ["team-a-0", "team-a-1", "team-a-2"]


# --- per-daemon addresses -----------------------------------------------------------------


def test_every_daemon_has_a_name_under_the_headless_service_the_certificate_covers() -> None:
    builder = make({"replicas": 2})
    objects = render(builder)
    (headless,) = [
        o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
    ]
    sans = server_sans(builder)
    for dep in deployments(objects):
        pod = dep["spec"]["template"]["spec"]
        assert pod["subdomain"] == headless["metadata"]["name"]
        host = f"{pod['hostname']}.{pod['subdomain']}.ci.svc"
        # A wildcard covers exactly one label (RFC 6125).
        assert f"*.{host.split('.', 1)[1]}" in sans, host


# --- routing ------------------------------------------------------------------------------

KEYS = [f"registry.example/team/project-{i}" for i in range(1000)]


def test_the_same_key_always_picks_the_same_daemon() -> None:
    daemons = ["team-a-0", "team-a-1", "team-a-2"]
    for key in KEYS[:100]:
        assert pick(key, daemons) == pick(key, list(reversed(daemons)))
    assert pick("x", []) is None


def test_adding_a_daemon_moves_about_a_quarter_of_the_keys() -> None:
    three = ["team-a-0", "team-a-1", "team-a-2"]
    four = [*three, "team-a-3"]
    before = {key: pick(key, three) for key in KEYS}
    after = {key: pick(key, four) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    # Only keys the new daemon now wins move; every one of them moves to it.
    assert all(after[key] == "team-a-3" for key in moved)
    share = len(moved) / len(KEYS)
    print(f"\nrouting: 3 -> 4 daemons moved {len(moved)} of {len(KEYS)} keys ({share:.1%})")
    assert 0.20 <= share <= 0.30, share
    spread = [sum(1 for k in KEYS if after[k] == d) for d in four]
    assert min(spread) > 200, spread  # each daemon takes a fair share


# --- security profiles --------------------------------------------------------------------


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    (dep,) = deployments(render(make({**spec, "cache": {"type": "ephemeral"}})))
    return dict(dep["spec"]["template"]["spec"])


def test_rootless_is_the_default_profile() -> None:
    pod = _pod({})
    container = pod["containers"][0]
    assert container["securityContext"]["runAsUser"] == 1000
    assert "privileged" not in container["securityContext"]
    assert container["image"].endswith("-rootless")
    assert "hostUsers" not in pod


def test_userns_runs_root_in_a_user_namespace_of_its_own() -> None:
    pod = _pod({"securityProfile": "userns"})
    assert pod["hostUsers"] is False
    container = pod["containers"][0]
    assert not container["image"].endswith("-rootless")
    assert "--oci-worker-no-process-sandbox" not in container["args"]


def test_rootless_false_keeps_meaning_privileged() -> None:
    assert _pod({"rootless": False}) == _pod({"securityProfile": "privileged"})
    assert _pod({"rootless": False})["containers"][0]["securityContext"] == {"privileged": True}


def test_rootless_false_with_another_profile_is_refused() -> None:
    with pytest.raises(InvalidBuilder, match=r"spec\.securityProfile"):
        make({"rootless": False, "securityProfile": "userns"})


# --- scale to zero ------------------------------------------------------------------------

TIMEOUT = timedelta(minutes=10)


def _deployment(idle_since: str | None = None, available: datetime = NOW) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "team-a-0", "creationTimestamp": "2025-12-31T00:00:00Z"}
    if idle_since:
        meta["annotations"] = {ANNOTATION_IDLE_SINCE: idle_since}
    cond = {
        "type": "Available",
        "status": "True",
        "lastTransitionTime": available.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {"metadata": meta, "status": {"conditions": [cond]}}


def test_an_activity_that_cannot_be_judged_never_sleeps() -> None:
    later = NOW + timedelta(days=30)
    for unknown in (None, Activity(None, None, "10.0.0.7:1234: UNAVAILABLE")):
        since, _ = decide(
            timeout=TIMEOUT,
            deployment=_deployment(),
            activity=unknown,
            wake_requested=None,
            now=later,
        )
        assert since is None


def test_a_daemon_building_never_sleeps() -> None:
    busy = Activity(in_flight=1, last_build=NOW - timedelta(days=1))
    since, _ = decide(
        timeout=TIMEOUT, deployment=_deployment(), activity=busy, wake_requested=None, now=NOW
    )
    assert since is None


def test_a_daemon_idle_for_the_timeout_sleeps_and_a_wake_request_starts_it() -> None:
    quiet = Activity(in_flight=0, last_build=NOW)
    since, again = decide(
        timeout=TIMEOUT, deployment=_deployment(), activity=quiet, wake_requested=None, now=NOW
    )
    assert since is None and again == TIMEOUT.total_seconds()
    later = NOW + TIMEOUT
    since, _ = decide(
        timeout=TIMEOUT, deployment=_deployment(), activity=quiet, wake_requested=None, now=later
    )
    assert since == later
    asleep = _deployment(idle_since=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    still, _ = decide(
        timeout=TIMEOUT, deployment=asleep, activity=None, wake_requested=None, now=later
    )
    assert still == later
    woken, _ = decide(
        timeout=TIMEOUT,
        deployment=asleep,
        activity=None,
        wake_requested=later + timedelta(seconds=5),
        now=later + timedelta(seconds=5),
    )
    assert woken is None


def test_an_asleep_daemon_renders_zero_replicas_and_keeps_its_claim() -> None:
    builder = make({"idleTimeout": "10m", "replicas": 2})
    bundle = ensure_tls({}, name=builder.name, server_sans=server_sans(builder), now=NOW)
    objects = render_builder(builder, bundle, asleep={"1": "2026-01-01T00:00:00Z"})
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments(objects)}
    assert replicas == {"team-a-0": 1, "team-a-1": 0}
    claims = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claims == ["team-a-cache-0", "team-a-cache-1"]


@pytest.mark.parametrize("bad", ["0s", "10", "1d", "-5m", "m"])
def test_idle_timeout_is_a_positive_duration(bad: str) -> None:
    with pytest.raises(InvalidBuilder, match=r"spec\.idleTimeout"):
        make({"idleTimeout": bad})
