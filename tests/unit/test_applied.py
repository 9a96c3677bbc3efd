"""The spec last applied stands in for the current one only where it asks for nothing more:
``status.appliedSpec`` is writable by whoever may write a Builder's status, and no admission
policy judges that write."""

from __future__ import annotations

from typing import Any

import pytest

from buildkit_operator.reconcile.applied import more_privileged

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
