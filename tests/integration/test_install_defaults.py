"""Install-wide defaults against the real control plane.

The operator runs with a default image repository, storage class and cache size (the flags
the chart's builderDefaults set). A Builder that names none of them gets the defaults, in its
Deployment, its cache claim and its status; a Builder that names its own keeps its own. When
the operator comes back with another default, the daemons of the Builders it applies to roll
onto it, and the others are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import builder, get, wait_until

from buildkit_operator.api import DEFAULT_IMAGE_ROOTLESS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "builders.buildkit.dev.yaml"
# The contract: the default image is a pinned moby/buildkit:<version>-rootless.
ROOTLESS_TAG = DEFAULT_IMAGE_ROOTLESS.rsplit(":", 1)[1]
MIRROR = "registry.internal/moby/buildkit"
OTHER_MIRROR = "mirror.example/buildkit"
OWN_IMAGE = "registry.example/team/buildkit:own-rootless"


def status(kubectl: Any, name: str, namespace: str) -> dict[str, Any]:
    return dict(get(kubectl, "builder", name, namespace).get("status") or {})


def wait_ready(kubectl: Any, name: str, namespace: str) -> None:
    wait_until(
        f"Builder {name} Ready",
        lambda: status(kubectl, name, namespace).get("phase") == "Ready",
        timeout=90,
    )


def image_of(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def running_images(kubectl: Any, namespace: str, name: str) -> set[str]:
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}")
    return {
        p["spec"]["containers"][0]["image"]
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def test_defaults_fill_what_builders_leave_unset_and_a_change_rolls_them(
    kubectl: Any, namespace: str, operator: Callable[..., Any]
) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl.wait_established("builders.buildkit.dev")
    flags = ["--default-storage-class=fast-ssd", "--default-cache-size=5Gi"]
    first = operator(f"--default-image-repository={MIRROR}", *flags)

    for obj in (
        builder("plain", namespace),
        builder("own", namespace, image=OWN_IMAGE,
                cache={"size": "2Gi", "storageClassName": "standard"}),
    ):  # fmt: skip
        kubectl("apply", "-f", "-", input=json.dumps(obj))
    for name in ("plain", "own"):
        wait_ready(kubectl, name, namespace)

    # The Builder that says nothing gets the defaults, and its status says which.
    plain = status(kubectl, "plain", namespace)
    assert plain["image"] == f"{MIRROR}:{ROOTLESS_TAG}"
    assert plain["cache"] == {"size": "5Gi", "storageClassName": "fast-ssd"}
    assert image_of(get(kubectl, "deployment", "plain-0", namespace)) == f"{MIRROR}:{ROOTLESS_TAG}"
    claim = get(kubectl, "pvc", "plain-cache-0", namespace)
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["status"]["phase"] == "Bound"
    # Its spec is the user's, as applied: the defaults live in the operator, not in the object.
    spec = get(kubectl, "builder", "plain", namespace)["spec"]
    assert "image" not in spec and "storageClassName" not in spec.get("cache", {})
    assert "size" not in spec.get("cache", {})

    # The Builder that says otherwise keeps its own.
    own = status(kubectl, "own", namespace)
    assert own["image"] == OWN_IMAGE
    assert own["cache"] == {"size": "2Gi", "storageClassName": "standard"}
    assert image_of(get(kubectl, "deployment", "own-0", namespace)) == OWN_IMAGE
    claim = get(kubectl, "pvc", "own-cache-0", namespace)
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"

    # Another default image: the daemons of the Builder that uses it roll onto it.
    own_before = get(kubectl, "deployment", "own-0", namespace)
    first.stop()
    operator(f"--default-image-repository={OTHER_MIRROR}", *flags)
    wanted = f"{OTHER_MIRROR}:{ROOTLESS_TAG}"
    wait_until(
        "plain's daemon to run the new default image",
        lambda: running_images(kubectl, namespace, "plain") == {wanted},
        timeout=90,
    )
    wait_until(
        "plain's status to show the new image, Ready",
        lambda: (
            (s := status(kubectl, "plain", namespace)).get("image") == wanted
            and s.get("phase") == "Ready"
        ),
        timeout=90,
    )
    # The Builder with its own image is not touched.
    own_after = get(kubectl, "deployment", "own-0", namespace)
    assert own_after["metadata"]["generation"] == own_before["metadata"]["generation"]
    assert own_after["spec"]["template"] == own_before["spec"]["template"]
    assert running_images(kubectl, namespace, "own") == {OWN_IMAGE}
