"""The spec last applied stands in for the current one only where the operator stored it
(an annotation on the Builder's own ConfigMap, never ``status.appliedSpec``, which whoever
may write a Builder's status can write, judged by no admission policy) and only where it
asks for nothing more than the current spec."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buildkit_operator.api import API_VERSION, KIND, Builder
from buildkit_operator.api.defaults import DEFAULTS
from buildkit_operator.reconcile.applied import more_privileged
from buildkit_operator.reconcile.observe import LastApplied, last_applied
from buildkit_operator.reconcile.types import Key
from buildkit_operator.render import render_builder

CURRENT: dict[str, Any] = {"image": "docker.io/moby/buildkit:v0.34.2-rootless", "replicas": 1}


@pytest.mark.parametrize(
    ("stored", "fields"),
    [
        ({**CURRENT, "replicas": 3, "buildkitd": {"config": "[worker.oci\n"}}, []),
        ({**CURRENT, "securityProfile": "privileged"}, ["spec.securityProfile"]),
        ({**CURRENT, "rootless": False}, ["spec.securityProfile"]),
        ({**CURRENT, "securityProfile": "userns"}, ["spec.securityProfile"]),
        ({**CURRENT, "image": "evil.example/buildkit"}, ["spec.image"]),
        (
            {"securityProfile": "privileged", "image": "evil.example/buildkit"},
            ["spec.securityProfile", "spec.image"],
        ),
        ({**CURRENT, "tolerations": [{"operator": "Exists"}]}, ["spec.tolerations"]),
        ({**CURRENT, "serviceAccountName": "admin"}, ["spec.serviceAccountName"]),
        ({**CURRENT, "podLabels": {"role": "db"}}, ["spec.podLabels"]),
        (
            {**CURRENT, "buildkitd": {"args": ["--allow-insecure-entitlement=security.insecure"]}},
            ["insecure entitlements"],
        ),
        (
            {**CURRENT, "buildkitd": {"config": 'insecure-entitlements = ["network.host"]\n'}},
            ["insecure entitlements"],
        ),
    ],
    ids=[
        "same-pod", "privileged", "rootless-false", "userns", "image", "privileged-and-image",
        "tolerations", "service-account", "pod-labels", "entitlement-arg", "entitlement-config",
    ],
)  # fmt: skip
def test_a_stored_spec_asking_for_more_is_not_used(
    stored: dict[str, Any], fields: list[str]
) -> None:
    assert more_privileged(stored, CURRENT) == fields


def test_a_stored_spec_asking_for_less_is_used() -> None:
    current = {**CURRENT, "securityProfile": "privileged"}
    assert more_privileged({**CURRENT, "securityProfile": "rootless"}, current) == []
    assert more_privileged(CURRENT, current) == []


# --- where the spec last applied is read from ----------------------------------------------

UID = "7d3c1f1e-0000-4000-8000-000000000001"
STORED = {**CURRENT, "replicas": 2}
NO_TLS = {"tls": {"mode": "disabled"}}


def _builder_obj(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "team", "namespace": "ci", "uid": UID},
        "spec": {**CURRENT, "buildkitd": {"config": "[worker.oci\n"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def _live_config(annotation: str | None, *, owned: bool = True) -> dict[Key, dict[str, Any]]:
    """The Builder's ConfigMap as the API server returns it, with what the operator renders
    (its owner reference and labels) unless ``owned`` is false."""
    builder = Builder.from_manifest({**_builder_obj(), "spec": {**CURRENT, **NO_TLS}})
    (config,) = [o for o in render_builder(builder) if o["kind"] == "ConfigMap"]
    meta = dict(config["metadata"])
    if not owned:
        meta.pop("ownerReferences")
    if annotation is not None:
        meta["annotations"] = {"buildkit.dev/applied-spec": annotation}
    return {("ConfigMap", "team-config"): {**config, "metadata": meta}}


def test_the_spec_last_applied_is_read_from_the_builders_config_map() -> None:
    last = last_applied(_builder_obj(), _live_config(json.dumps(STORED)), DEFAULTS)
    assert last.spec == STORED and last.refused is None
    assert last.builder is not None and last.builder.spec.replicas == 2


def test_the_status_alone_never_stands_in_for_the_spec() -> None:
    """A Builder of an earlier release (or a forged status): status.appliedSpec and no
    stored spec. Nothing stands in for the spec, and the status says so."""
    obj = _builder_obj({"appliedSpec": STORED})
    for live in ({}, _live_config(None)):
        last = last_applied(obj, live, DEFAULTS)
        assert last.builder is None and last.spec is None
        assert last.refused and "status.appliedSpec is never used" in last.refused
    # Without a claim in the status, an invalid spec is reported alone.
    assert last_applied(_builder_obj(), {}, DEFAULTS) == LastApplied()


@pytest.mark.parametrize(
    ("live", "refused"),
    [
        (
            _live_config(json.dumps(STORED), owned=False),
            "ConfigMap team-config is not the Builder's",
        ),
        (_live_config("{not json"), "does not parse"),
        (_live_config(json.dumps(["a"])), "does not parse"),
        (
            _live_config(json.dumps({**CURRENT, "securityProfile": "privileged"})),
            "it asks for more than the spec (spec.securityProfile)",
        ),
        (_live_config(json.dumps({**CURRENT, "replicas": "many"})), "is not valid"),
    ],
    ids=["someone-elses-config-map", "not-json", "not-a-mapping", "more-privileged", "invalid"],
)
def test_a_stored_spec_that_cannot_be_trusted_is_not_used(
    live: dict[Key, dict[str, Any]], refused: str
) -> None:
    last = last_applied(_builder_obj({"appliedSpec": STORED}), live, DEFAULTS)
    assert last.builder is None and last.spec is None
    assert last.refused and refused in last.refused, last.refused


def test_the_config_map_keeps_the_spec_it_was_rendered_from() -> None:
    builder = Builder.from_manifest({**_builder_obj(), "spec": {**STORED, **NO_TLS}})
    (config,) = [
        o for o in render_builder(builder, applied_spec=STORED) if o["kind"] == "ConfigMap"
    ]
    assert json.loads(config["metadata"]["annotations"]["buildkit.dev/applied-spec"]) == STORED
