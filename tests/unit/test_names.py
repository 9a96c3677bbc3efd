"""Child names, for any valid Builder name: valid for their kind, distinct between Builders,
and rendering that does not depend on anything but its input."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from buildkit_operator.api import Builder
from buildkit_operator.api.names import ChildNames, label_value, selector_labels
from buildkit_operator.pki import ensure_tls
from buildkit_operator.render import render_builder, server_sans
from fuzzing import fuzz_settings

# What the API server checks (k8s.io/apimachinery/pkg/util/validation).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

MAX_DAEMONS = 64  # spec.replicas is at most 64
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
NOW = datetime(2026, 11, 24, tzinfo=UTC)
FAST = fuzz_settings(100, suppress_health_check=[HealthCheck.too_slow])
RENDERING = fuzz_settings(25, suppress_health_check=[HealthCheck.too_slow])


def is_dns_1035_label(name: str) -> bool:
    return len(name) <= 63 and bool(DNS_1035_LABEL.match(name))


def is_dns_1123_label(name: str) -> bool:
    return len(name) <= 63 and bool(DNS_1123_LABEL.match(name))


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(DNS_1123_SUBDOMAIN.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


# --- a strategy for every valid Builder name ----------------------------------------------


@st.composite
def segments(draw: st.DrawFn, max_size: int, min_size: int = 1) -> str:
    """One dot-free part of a name: alphanumerics and '-', alphanumeric at both ends (may
    start with a digit). A Kubernetes object name limits only the whole name to 253
    characters, not its parts to 63."""
    size = draw(
        st.integers(min_size, max_size)
        | st.sampled_from([max_size, max(min_size, min(63, max_size))])
    )
    first = draw(st.sampled_from(ALNUM))
    if size == 1:
        return first
    middle = draw(st.text(alphabet=ALNUM + "-", min_size=size - 2, max_size=size - 2))
    return first + middle + draw(st.sampled_from(ALNUM))


@st.composite
def builder_names(draw: st.DrawFn) -> str:
    """A DNS-1123 subdomain of up to 253 characters: one or more dot-separated parts."""
    limit = draw(st.sampled_from([20, 50, 51, 63, 64, 253]) | st.integers(1, 253))
    parts = [draw(segments(limit))]
    while draw(st.booleans()):
        room = limit - len(".".join(parts)) - 1
        if room < 1:
            break
        parts.append(draw(segments(room)))
    return ".".join(parts)


@st.composite
def full_length_names(draw: st.DrawFn) -> str:
    """Names of exactly 253 characters: any name, filled up with one more part."""
    name = draw(builder_names())
    room = 253 - len(name) - 1
    if room < 1:
        return name + "7" * (253 - len(name))
    return f"{name}.{draw(segments(room, min_size=room))}"


NAMES = builder_names() | full_length_names()


@st.composite
def similar_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two distinct names that a careless shortening would map to one child name."""
    name = draw(NAMES)
    how = draw(st.sampled_from(["dots", "suffix", "last", "prefix", "any"]))
    if how == "dots" and "." in name:
        other = name.replace(".", "-")
    elif how == "suffix" and len(name) < 253:
        other = name + draw(st.sampled_from(ALNUM))
    elif how == "last":
        other = name[:-1] + draw(st.sampled_from(ALNUM))
    elif how == "prefix" and len(name) > 1:
        other = name[: draw(st.integers(1, len(name) - 1))].rstrip("-.")
    else:
        other = draw(NAMES)
    if not is_dns_subdomain(other):
        other = draw(NAMES)
    return name, other


SHAPES = {
    "long and dotted": lambda n: len(n) > 200 and n.count(".") >= 3,
    "253 characters": lambda n: len(n) == 253,
    "starts with a digit": lambda n: n[0].isdigit(),
    "short and dotted": lambda n: "." in n and len(n) < 50,
    "longer than 63, no dots": lambda n: len(n) > 63 and "." not in n,
    "51 to 63, no dots": lambda n: 50 < len(n) <= 63 and "." not in n,
    "double hyphen": lambda n: "--" in n,
}


class _EveryShapeSeen(Exception):
    """Ends the drawing early: the rest of the examples could not change the outcome."""


def test_the_strategy_generates_every_shape_of_name() -> None:
    seen: set[str] = set()

    # Hypothesis mixes constants found in the loaded modules into what it draws, so which
    # names 300 examples hold depends on the other tests collected with this one: draw up to
    # 2000, stopping as soon as every shape was drawn (usually within a hundred). Without the
    # shrink phase the stop is not shrunk; replayed, it stops again.
    @settings(
        max_examples=2000,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
    )
    @given(NAMES)
    def collect(name: str) -> None:
        seen.update(shape for shape, matches in SHAPES.items() if matches(name))
        if seen == set(SHAPES):
            raise _EveryShapeSeen

    with contextlib.suppress(_EveryShapeSeen):
        collect()
    assert seen == set(SHAPES)


@FAST
@given(NAMES)
def test_generated_names_are_valid_builder_names(name: str) -> None:
    assert is_dns_subdomain(name)
    builder = Builder.from_manifest(manifest(name))
    assert builder.name == name


# --- valid for their kind -------------------------------------------------------------------


def manifest(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": name, "namespace": "ci", "uid": "u-1"},
        "spec": spec or {},
    }


def children_by_kind(name: str) -> dict[str, list[str]]:
    names = ChildNames(name)
    return {
        "Service": [names.service],
        "ConfigMap": [names.config_map],
        "Secret": [names.ca_secret, names.server_secret, names.client_secret],
        "Deployment": [names.daemon(i) for i in range(MAX_DAEMONS)],
        "PersistentVolumeClaim": [names.cache_claim(i) for i in range(MAX_DAEMONS)],
    }


@FAST
@given(NAMES)
@example("a")
@example("0")
@example("1team")
@example("team-a")
@example("a" * 50)
@example("a" * 51)
@example("a" * 253)
@example("9" * 63 + "." + "9" * 63)
@example("a.b")
def test_child_names_are_valid_for_their_kind(name: str) -> None:
    kinds = children_by_kind(name)
    # A Service name is a DNS-1035 label (it must start with a letter).
    (service,) = kinds["Service"]
    assert is_dns_1035_label(service), service
    # A Deployment's name is also its pod's hostname: a DNS-1123 label.
    for deployment in kinds["Deployment"]:
        assert is_dns_1123_label(deployment), deployment
    for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim"):
        for child in kinds[kind]:
            assert is_dns_subdomain(child), (kind, child)
    # The endpoint is a resolvable host name under the Service.
    assert ChildNames(name).endpoint("ci") == f"tcp://{service}.ci.svc:1234"
    for value in selector_labels(name).values():
        assert is_label_value(value), value
    assert is_label_value(label_value(name))


@FAST
@given(NAMES)
def test_names_that_fit_are_used_as_they_are(name: str) -> None:
    """A short Builder name is recognisable in its children: team-a -> Service team-a."""
    if len(name) <= 50 and DNS_1035_LABEL.match(name):
        assert ChildNames(name).service == name
        assert ChildNames(name).daemon(0) == f"{name}-0"
    if len(name) <= 63:
        assert label_value(name) == name


@FAST
@given(NAMES)
def test_children_of_one_builder_have_distinct_names(name: str) -> None:
    for kind, children in children_by_kind(name).items():
        assert len(set(children)) == len(children), kind


def _assert_apart(first: str, second: str) -> None:
    a, b = children_by_kind(first), children_by_kind(second)
    for kind in a:
        shared = set(a[kind]) & set(b[kind])
        assert not shared, f"{first!r} and {second!r} share {kind} {sorted(shared)}"
    assert label_value(first) != label_value(second)
    assert selector_labels(first) != selector_labels(second)


@FAST
@given(NAMES, NAMES)
def test_two_builders_never_share_a_child_name(first: str, second: str) -> None:
    if first != second:
        _assert_apart(first, second)


@FAST
@given(similar_pairs())
@example(("a.b", "a-b"))
@example(("x" * 60, "x" * 61))
@example(("a" * 42 + ".b", "a" * 42 + "-b"))
@example(("1a", "b1a"))
def test_similar_builders_never_share_a_child_name(pair: tuple[str, str]) -> None:
    first, second = pair
    if first != second:
        _assert_apart(first, second)


# --- rendered objects -----------------------------------------------------------------------

_BUNDLE = ensure_tls({}, name="team-a", server_sans=["team-a.ci.svc"], now=NOW)


def _render(name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    return render_builder(Builder.from_manifest(manifest(name, spec)), _BUNDLE)


def _labels_in(obj: dict[str, Any]) -> list[dict[str, str]]:
    found = [obj["metadata"].get("labels", {})]
    if obj["kind"] == "Deployment":
        found.append(obj["spec"]["template"]["metadata"]["labels"])
        found.append(obj["spec"]["selector"]["matchLabels"])
    if obj["kind"] == "Service":
        found.append(obj["spec"]["selector"])
    return found


NAME_CHECK = {
    "Service": is_dns_1035_label,
    "Deployment": is_dns_1123_label,
    "ConfigMap": is_dns_subdomain,
    "Secret": is_dns_subdomain,
    "PersistentVolumeClaim": is_dns_subdomain,
    "PodDisruptionBudget": is_dns_subdomain,
}


@RENDERING
@given(NAMES, st.integers(0, MAX_DAEMONS))
@example("a" * 253, MAX_DAEMONS)
def test_rendered_objects_are_valid_for_any_name(name: str, replicas: int) -> None:
    objects = _render(name, {"replicas": replicas})
    assert len([o for o in objects if o["kind"] == "Deployment"]) == replicas
    for obj in objects:
        kind, child = obj["kind"], obj["metadata"]["name"]
        assert NAME_CHECK[kind](child), (kind, child)
        for labels in _labels_in(obj):
            for value in labels.values():
                assert is_label_value(value), (kind, value)
        if kind == "Deployment":
            hostname = obj["spec"]["template"]["spec"]["hostname"]
            assert is_dns_1123_label(hostname), hostname
    seen = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"replicas": 3, "rootless": False, "cache": {"retain": False, "storageClassName": "ssd"}},
        {
            "buildkitd": {
                "maxParallelism": 2,
                "registryMirrors": {"docker.io": ["b:1", "a:1"], "ghcr.io": ["c:1"]},
                "insecureRegistries": ["z:5000", "a:5000"],
                "platforms": ["linux/arm64", "linux/amd64"],
                "config": "[worker.oci]\nlabels = {b = '2', a = '1'}\n[log]\nformat='json'\n",
            },
            "nodeSelector": {"b": "2", "a": "1"},
            "podLabels": {"z": "1", "a": "2"},
            "podAnnotations": {"z": "1", "a": "2"},
            "tls": {"extraSANs": ["b.example.com", "10.0.0.1"]},
        },
        {"tls": {"mode": "secret", "secretName": "cert"}, "cache": {"type": "ephemeral"}},
    ],
    ids=["defaults", "rootful", "everything", "secret"],
)
def test_rendering_twice_gives_identical_objects(spec: dict[str, Any]) -> None:
    first = _render("team-a", spec)
    second = _render("team-a", json.loads(json.dumps(spec)))
    assert first == second
    assert json.dumps(first, sort_keys=False) == json.dumps(second, sort_keys=False)


@RENDERING
@given(NAMES, st.integers(0, 4))
def test_rendering_is_deterministic_for_any_name(name: str, replicas: int) -> None:
    spec = {"replicas": replicas, "buildkitd": {"registryMirrors": {"b": ["1"], "a": ["2"]}}}
    assert _render(name, spec) == _render(name, spec)


def test_server_certificate_names_follow_the_service() -> None:
    builder = Builder.from_manifest(manifest("x" * 253))
    sans = server_sans(builder)
    service = ChildNames(builder.name).service
    assert f"{service}.ci.svc" in sans
    assert all(len(s) <= 253 for s in sans)
