"""drift: comparison by the API server's published semantics (list types, atomic maps,
quantities) and by field ownership. The schema is the pinned API server's own (snapshot
checked against it by tests/integration/test_openapi_snapshot.py); the live objects are
written as the API server returns them (quantities canonical, defaults filled in)."""

from __future__ import annotations

from typing import Any

import pytest

from buildkit_operator.reconcile.drift import (
    default_schema,
    displaced_lists,
    object_differences,
    owned_fields,
    stale_fields,
)


def deployment(pod: dict[str, Any], container: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "buildkitd", **(container or {})}], **pod},
            },
        },
    }


def live(obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side extras on top of what a test sets: fields the API server defaults."""
    out = {**obj, "metadata": {**obj["metadata"], "uid": "u", "resourceVersion": "7"}}
    spec = out["spec"]["template"]["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    for c in spec["containers"]:
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
    out["spec"].setdefault("progressDeadlineSeconds", 600)
    out["status"] = {"observedGeneration": 1}
    return out


SHARED_KEY = [
    {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
]


def test_tolerations_sharing_a_key_compare_equal() -> None:
    """Tolerations are an atomic list: no guessed item key, so two sharing one key are
    still the same list (this looped for ever when matched on ``key``)."""
    want = deployment({"tolerations": SHARED_KEY})
    assert object_differences(want, live(deployment({"tolerations": list(SHARED_KEY)}))) == []


def test_atomic_list_with_an_item_added_or_reordered_is_drift() -> None:
    want = deployment({"tolerations": SHARED_KEY})
    extra = [*SHARED_KEY, {"key": "gpu", "operator": "Exists"}]
    assert object_differences(want, live(deployment({"tolerations": extra}))) == [
        "spec.template.spec.tolerations"
    ]
    swapped = list(reversed(SHARED_KEY))
    assert object_differences(want, live(deployment({"tolerations": swapped})))


def test_match_expressions_sharing_a_key_compare_equal() -> None:
    term = {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
        ]
    }
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}  # fmt: skip
    want = deployment({"affinity": affinity})
    assert object_differences(want, live(deployment({"affinity": affinity}))) == []


@pytest.mark.parametrize(
    ("want", "server", "same"),
    [
        ("0.1", "100m", True),
        ("1e3", "1k", True),
        ("1000", "1k", True),
        ("1Gi", "1Gi", True),
        ("1.5Gi", "1536Mi", True),
        ("100m", "500m", False),  # below one unit: was hidden by rounding
        ("1Gi", "1G", False),
        ("2", "2000m", True),
    ],
)
def test_quantities_compare_by_exact_value(want: str, server: str, same: bool) -> None:
    desired = deployment({}, {"resources": {"requests": {"cpu": want}}})
    have = live(deployment({}, {"resources": {"requests": {"cpu": server}}}))
    found = object_differences(desired, have)
    assert (found == []) is same, found


def test_quantity_semantics_apply_only_to_quantity_fields() -> None:
    """A label value that looks like a quantity is still a string."""
    want = deployment({"nodeSelector": {"size": "1k"}})
    assert object_differences(want, live(deployment({"nodeSelector": {"size": "1000"}})))


def test_containers_are_matched_by_name_and_carry_defaults() -> None:
    want = deployment({}, {"image": "moby/buildkit", "args": ["--debug"]})
    have = live(deployment({}, {"image": "moby/buildkit", "args": ["--debug"]}))
    # Someone else's sidecar is theirs: server-side apply leaves it, so it is no drift.
    have["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    assert object_differences(want, have) == []
    have["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    assert object_differences(want, have) == ["spec.template.spec.containers[buildkitd].image"]


def test_atomic_map_with_a_key_added_is_drift() -> None:
    """nodeSelector is an atomic map: an apply replaces it whole."""
    want = deployment({"nodeSelector": {"disk": "ssd"}})
    have = live(deployment({"nodeSelector": {"disk": "ssd", "zone": "a"}}))
    assert object_differences(want, have) == ["spec.template.spec.nodeSelector.zone"]


def test_granular_map_with_a_key_added_is_not_drift() -> None:
    """Pod labels are a granular map: another manager's label is theirs."""
    want = deployment({})
    have = live(deployment({}))
    have["spec"]["template"]["metadata"]["labels"]["team"] = "a"
    assert object_differences(want, have) == []


def test_service_ports_keyed_by_port_and_protocol() -> None:
    want = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"name": "b", "port": 1234, "targetPort": "b", "protocol": "TCP"}]},
    }
    have = {
        **want,
        "spec": {
            "ports": [{"name": "b", "port": 1234, "targetPort": "b", "protocol": "TCP"}],
            "clusterIP": "10.0.0.9",
            "sessionAffinity": "None",
        },
    }
    assert object_differences(want, have) == []
    have["spec"]["ports"][0]["targetPort"] = 1234
    assert object_differences(want, have) == ["spec.ports[1234,TCP].targetPort"]


def test_the_schema_is_the_api_servers() -> None:
    schema = default_schema()
    pod = schema.schemas["io.k8s.api.core.v1.PodSpec"]["properties"]
    assert pod["containers"]["x-kubernetes-list-type"] == "map"
    assert pod["containers"]["x-kubernetes-list-map-keys"] == ["name"]
    assert pod["tolerations"].get("x-kubernetes-list-type", "atomic") == "atomic"


# managedFields as the API server records an apply by the operator's field manager.
MANAGED = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "subresource": "status",
        "fieldsV1": {"f:status": {"f:replicas": {}}},
    },
    {
        "manager": "buildkit-operator",
        "operation": "Apply",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:template": {
                    "f:spec": {
                        "f:nodeSelector": {},
                        "f:containers": {
                            'k:{"name":"buildkitd"}': {".": {}, "f:name": {}, "f:args": {}}
                        },
                    }
                }
            },
        },
    },
]


def test_a_field_the_operator_owns_but_no_longer_renders_is_stale() -> None:
    have = {"metadata": {"name": "d", "managedFields": MANAGED}}
    want = deployment({}, {"args": ["--debug"]})
    want["metadata"]["labels"] = {"app": "d"}
    assert stale_fields(want, have, "buildkit-operator") == ["spec.template.spec.nodeSelector"]
    want["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    assert stale_fields(want, have, "buildkit-operator") == []
    del want["spec"]["template"]["spec"]["containers"][0]["args"]
    assert stale_fields(want, have, "buildkit-operator") == [
        "spec.template.spec.containers[buildkitd].args"
    ]


def test_other_managers_and_status_ownership_are_not_ours() -> None:
    have = {"metadata": {"managedFields": MANAGED}}
    assert owned_fields(have, "kubectl") is None
    assert stale_fields(deployment({}), have, "kube-controller-manager") == []


def _service(ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"ports": ports},
    }


def test_a_port_edited_under_its_name_is_displaced_not_only_missing() -> None:
    """`kubectl patch svc --type=json` of port 1234 to 8266: server-side apply merges ports
    by (port, protocol), so applying 1234 adds a second port named buildkitd, which the API
    server refuses. The list has to be replaced."""
    ours = {"name": "buildkitd", "port": 1234, "targetPort": "buildkitd", "protocol": "TCP"}
    want = _service([ours])
    edited = _service([{**ours, "port": 8266}])
    assert "spec.ports[1234,TCP]" in object_differences(want, edited)
    assert displaced_lists(want, edited) == ["spec.ports"]
    # Another port beside ours (someone's own, another name) is not displacement.
    beside = _service([ours, {"name": "metrics", "port": 9090, "protocol": "TCP"}])
    assert displaced_lists(want, beside) == []
    missing = _service([{"name": "other", "port": 80, "protocol": "TCP"}])
    assert displaced_lists(want, missing) == []


def test_a_container_port_edited_under_its_name_is_displaced() -> None:
    port = {"name": "buildkitd", "containerPort": 1234, "protocol": "TCP"}
    want = deployment({}, {"ports": [port]})
    edited = live(deployment({}, {"ports": [{**port, "containerPort": 8266}]}))
    assert displaced_lists(want, edited) == ["spec.template.spec.containers[buildkitd].ports"]
