"""The API server refuses a malformed Builder at `kubectl apply`, naming the field, and
accepts every valid Builder up to the boundaries the contract and Kubernetes set.

Each Builder is sent with a server-side dry run against the pinned API server with the CRD
from crds/, so what is checked is the schema and CEL rules as the API server runs them (its
CEL libraries, its cost limits), not as the generator wrote them. The operator's model is
asked too: the two must agree on every case, so that nothing `kubectl apply` accepts is then
refused by the operator (for what the schema can express at all).
"""

from __future__ import annotations

import copy
import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildkit_operator.api import Builder, InvalidBuilder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "builders.buildkit.dev.yaml"

# The flags the operator puts on buildkitd's command line itself (the listener, the TLS
# files, the config file, the state directory, the rootless sandbox): a user's copy would
# fight them.
OPERATOR_FLAGS = [
    "--addr",
    "--config",
    "--root",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--oci-worker-no-process-sandbox",
    "--debugaddr",
]
# Flags that point buildkitd at binaries, paths, sockets or devices, or loosen the build
# containers' sandbox (buildkitd v0.34's flags): no Builder author passes them.
HOST_REACHING_FLAGS = [
    "--oci-worker-binary",
    "--oci-worker-proxy-snapshotter-path",
    "--oci-cni-config-path",
    "--oci-cni-binary-dir",
    "--oci-worker-net",
    "--rootless",
    "--cdi-spec-dir",
    "--otel-socket-path",
    "--containerd-worker",
    "--containerd-worker-addr",
]


@pytest.fixture(scope="module")
def crd(kubectl: Any) -> None:
    """The generated CRD, installed as `kubectl apply` installs it: the API server checks
    every CEL rule compiles and fits its cost budget, or refuses the CRD."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl.wait_established("builders.buildkit.dev")


@pytest.fixture(scope="module")
def ns(cluster: Any) -> Iterator[str]:
    """One namespace for the whole module: dry runs create nothing in it, and a namespace per
    case would spend most of the time deleting namespaces."""
    name = f"admission-{uuid.uuid4().hex[:6]}"
    cluster.api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        exist_ok=False,
    )
    yield name
    cluster.api.delete(f"/api/v1/namespaces/{name}")


def builder(namespace: str, spec: Any, name: str = "adm") -> dict[str, Any]:
    return {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def dry_run(kubectl: Any, doc: dict[str, Any]) -> Any:
    return kubectl.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))


def model_problems(doc: dict[str, Any]) -> list[str]:
    try:
        Builder.from_manifest(copy.deepcopy(doc))
    except InvalidBuilder as err:
        return err.problems
    return []


# (id, spec, the field the API server's message must name, a phrase it must contain)
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "autoscale-and-replicas",
        {"replicas": 2, "autoscale": {"maxReplicas": 3}},
        "spec.autoscale",
        "replicas and autoscale are exclusive",
    ),
    (
        "autoscale-and-replicas-one",
        {"replicas": 1, "autoscale": {"maxReplicas": 3}},
        "spec.autoscale",
        "remove replicas",
    ),
    (
        "autoscale-min-over-max",
        {"autoscale": {"minReplicas": 4, "maxReplicas": 3}},
        "spec.autoscale.minReplicas",
        "minReplicas must not be more than maxReplicas",
    ),
    (
        "autoscale-no-max",
        {"autoscale": {"minReplicas": 1}},
        "spec.autoscale.maxReplicas",
        "Required",
    ),
    (
        "autoscale-max-too-many",
        {"autoscale": {"maxReplicas": 65}},
        "spec.autoscale.maxReplicas",
        "64",
    ),
    (
        "autoscale-window",
        {"autoscale": {"maxReplicas": 2, "scaleDownAfter": "10"}},
        "spec.autoscale.scaleDownAfter",
        "duration",
    ),
    (
        "autoscale-min-zero-without-idle-timeout",
        {"autoscale": {"minReplicas": 0, "maxReplicas": 2}},
        "spec.idleTimeout",
        "set idleTimeout",
    ),
    (
        "autoscale-with-pools",
        {"autoscale": {"maxReplicas": 2}, "pools": [{"platform": "linux/arm64"}]},
        "spec.autoscale",
        "set autoscale in each pool",
    ),
    (
        "pool-autoscale-and-replicas",
        {"pools": [{"platform": "linux/arm64", "replicas": 1, "autoscale": {"maxReplicas": 3}}]},
        "spec.pools[0].autoscale",
        "replicas and autoscale are exclusive",
    ),
    (
        "pool-autoscale-min-over-max",
        {"pools": [{"platform": "linux/arm64", "autoscale": {"minReplicas": 3, "maxReplicas": 2}}]},
        "spec.pools[0].autoscale.minReplicas",
        "must not be more than maxReplicas",
    ),
    ("idle-timeout-zero", {"idleTimeout": "0s"}, "spec.idleTimeout", "duration"),
    ("idle-timeout-days", {"idleTimeout": "1d"}, "spec.idleTimeout", "duration"),
    ("pool-platform", {"pools": [{"platform": "arm64"}]}, "spec.pools[0].platform", "platform"),
    (
        "pool-platform-twice",
        {"pools": [{"platform": "linux/arm64"}, {"platform": "linux/arm64", "replicas": 2}]},
        "spec.pools[1]",
        "Duplicate value",
    ),
    (
        "pool-node-selector",
        {"pools": [{"platform": "linux/arm64", "nodeSelector": {"bad key!": "x"}}]},
        "spec.pools[0].nodeSelector",
        "label key",
    ),
    (
        "rootless-false-userns",
        {"rootless": False, "securityProfile": "userns"},
        "spec.securityProfile",
        "rootless: false",
    ),
    ("security-profile", {"securityProfile": "root"}, "spec.securityProfile", "Unsupported value"),
    *[
        (f"args{flag}", {"buildkitd": {"args": [flag, "x"]}}, "spec.buildkitd.args[0]", flag)
        for flag in OPERATOR_FLAGS
    ],
    (
        "args-equals",
        {"buildkitd": {"args": ["--debug", "--addr=tcp://0.0.0.0:9999"]}},
        "spec.buildkitd.args[1]",
        "--addr is set by the operator",
    ),
    (
        "args-single-dash",
        {"buildkitd": {"args": ["-config=/tmp/x.toml"]}},
        "spec.buildkitd.args[0]",
        "--config is set by the operator",
    ),
    (
        "args-single-dash-bare",
        {"buildkitd": {"args": ["-root"]}},
        "spec.buildkitd.args[0]",
        "--root",
    ),
    *[
        (
            f"args{flag}",
            {"buildkitd": {"args": ["--debug", f"{flag}=x"]}},
            "spec.buildkitd.args[1]",
            f"{flag} reaches binaries, paths, sockets or the sandbox",
        )
        for flag in HOST_REACHING_FLAGS
    ],
    ("size-255Mi", {"cache": {"size": "255Mi"}}, "spec.cache.size", "at least 256Mi"),
    ("size-millis", {"cache": {"size": "100m"}}, "spec.cache.size", "at least 256Mi"),
    ("size-int", {"cache": {"size": 268435455}}, "spec.cache.size", "at least 256Mi"),
    ("size-decimal", {"cache": {"size": "0.2Gi"}}, "spec.cache.size", "at least 256Mi"),
    ("size-zero", {"cache": {"size": 0}}, "spec.cache.size", "at least 256Mi"),
    ("size-negative", {"cache": {"size": "-1Gi"}}, "spec.cache.size", "at least 256Mi"),
    (
        "requests-above-limits",
        {"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "2Gi"}}},
        "spec.resources",
        "requests.memory (4Gi) must not exceed limits.memory (2Gi)",
    ),
    (
        "requests-above-limits-other-units",
        {"resources": {"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}},
        "spec.resources",
        "requests.cpu (1500m) must not exceed limits.cpu (1)",
    ),
    (
        "requests-negative",
        {"resources": {"requests": {"cpu": "-1"}}},
        "spec.resources.requests",
        "must not be negative",
    ),
    (
        "resource-name",
        {"resources": {"limits": {"gpu": 1}}},
        "spec.resources.limits",
        "'gpu' is not a resource",
    ),
    (
        "resource-name-bad-prefix",
        {"resources": {"limits": {"Example_COM/gpu": 1}}},
        "spec.resources.limits",
        "'Example_COM/gpu' is not a resource",
    ),
    (
        "node-selector-key",
        {"nodeSelector": {"bad key!": "x"}},
        "spec.nodeSelector",
        "label key 'bad key!'",
    ),
    (
        "node-selector-prefix",
        {"nodeSelector": {"Example_COM/arch": "amd64"}},
        "spec.nodeSelector",
        "prefix must be a DNS subdomain",
    ),
    (
        "node-selector-empty-prefix",
        {"nodeSelector": {"/arch": "amd64"}},
        "spec.nodeSelector",
        "label key '/arch'",
    ),
    (
        "node-selector-name-64",
        {"nodeSelector": {"n" * 64: "x"}},
        "spec.nodeSelector",
        "name must be 1-63",
    ),
    (
        "node-selector-value",
        {"nodeSelector": {"disk": "fast ssd"}},
        "spec.nodeSelector",
        "label value 'fast ssd' for 'disk'",
    ),
    (
        "node-selector-value-64",
        {"nodeSelector": {"disk": "v" * 64}},
        "spec.nodeSelector",
        "63",
    ),
    ("pod-label-value", {"podLabels": {"team": "a b"}}, "spec.podLabels", "label value 'a b'"),
    ("pod-label-key", {"podLabels": {"-team": "a"}}, "spec.podLabels", "label key '-team'"),
    (
        "pod-annotation-key",
        {"podAnnotations": {"not valid/": "x"}},
        "spec.podAnnotations",
        "label key 'not valid/'",
    ),
    (
        "toleration-key",
        {"tolerations": [{"key": "bad key!", "operator": "Exists"}]},
        "spec.tolerations[0].key",
        "label key 'bad key!'",
    ),
    (
        "toleration-value",
        {"tolerations": [{"key": "k", "value": "a b"}]},
        "spec.tolerations[0].value",
        "label value 'a b'",
    ),
    (
        "toleration-exists-with-value",
        {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
        "spec.tolerations[0].value",
        "value must be empty when operator is Exists",
    ),
    (
        "toleration-no-key",
        {"tolerations": [{"value": "v"}]},
        "spec.tolerations[0].operator",
        "operator must be Exists when key is empty",
    ),
    (
        "toleration-seconds",
        {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]},
        "spec.tolerations[0].tolerationSeconds",
        "only allowed with effect NoExecute",
    ),
    (
        "priority-class",
        {"priorityClassName": "High Priority"},
        "spec.priorityClassName",
        "not a valid object name",
    ),
    (
        "service-account",
        {"serviceAccountName": "Builder"},
        "spec.serviceAccountName",
        "not a valid object name",
    ),
    (
        "pull-secret",
        {"imagePullSecrets": [{"name": "Reg_Cred"}]},
        "spec.imagePullSecrets[0].name",
        "not a valid object name",
    ),
    (
        "storage-class",
        {"cache": {"storageClassName": "Fast_SSD"}},
        "spec.cache.storageClassName",
        "not a valid object name",
    ),
    (
        "tls-secret-name",
        {"tls": {"mode": "secret", "secretName": "My_Cert"}},
        "spec.tls.secretName",
        "not a valid object name",
    ),
    (
        "platform-os-only",
        {"buildkitd": {"platforms": ["linux/amd64", "linux"]}},
        "spec.buildkitd.platforms[1]",
        "'linux' is not a platform",
    ),
    (
        "platform-list-in-one",
        {"buildkitd": {"platforms": ["linux/amd64,linux/arm64"]}},
        "spec.buildkitd.platforms[0]",
        "is not a platform",
    ),
    (
        "san",
        {"tls": {"extraSANs": ["ok.example.com", "not a name!"]}},
        "spec.tls.extraSANs[1]",
        "neither an IP address nor a DNS name",
    ),
    (
        "san-long-label",
        {"tls": {"extraSANs": ["x" * 64 + ".example.com"]}},
        "spec.tls.extraSANs[0]",
        "neither an IP address nor a DNS name",
    ),
    (
        "san-bad-ipv6",
        {"tls": {"extraSANs": ["2001:db8::1::2"]}},
        "spec.tls.extraSANs[0]",
        "neither an IP address nor a DNS name",
    ),
    ("san-zone", {"tls": {"extraSANs": ["fe80::1%eth0"]}}, "spec.tls.extraSANs[0]", "zone"),
    ("image-space", {"image": "moby/buildkit "}, "spec.image", "whitespace"),
    ("image-tab", {"image": "\tmoby/buildkit"}, "spec.image", "whitespace"),
    (
        "node-port-without-tls",
        {"tls": {"mode": "disabled"}, "service": {"type": "NodePort"}},
        "spec.service.type",
        "service.type NodePort with tls.mode disabled",
    ),
    (
        "load-balancer-without-tls",
        {"tls": {"mode": "disabled"}, "service": {"type": "LoadBalancer"}},
        "spec.service.type",
        "allowWithoutTLS",
    ),
    (
        "load-balancer-without-tls-opt-in-false",
        {
            "tls": {"mode": "disabled"},
            "service": {"type": "LoadBalancer", "allowWithoutTLS": False},
        },
        "spec.service.type",
        "unauthenticated",
    ),
]

# Valid Builders, several at the exact boundary of a rule above.
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("autoscale", {"autoscale": {"maxReplicas": 3}}),
    (
        "autoscale-all-fields",
        {
            "autoscale": {
                "minReplicas": 2,
                "maxReplicas": 2,
                "scaleUpAfter": "1m30s",
                "scaleDownAfter": "1h",
            }
        },
    ),
    (
        "autoscale-min-zero",
        {"autoscale": {"minReplicas": 0, "maxReplicas": 4}, "idleTimeout": "30m"},
    ),
    (
        "pools-autoscale",
        {
            "pools": [
                {"platform": "linux/amd64", "autoscale": {"minReplicas": 1, "maxReplicas": 4}},
                {"platform": "linux/arm64", "replicas": 1},
            ]
        },
    ),
    (
        "pools",
        {
            "pools": [
                {"platform": "linux/amd64", "replicas": 2},
                {"platform": "linux/arm64", "nodeSelector": {"pool": "graviton"}},
                {"platform": "linux/arm/v7", "resources": {"limits": {"cpu": "1"}}},
            ]
        },
    ),
    ("idle-timeout", {"idleTimeout": "1h30m"}),
    ("userns", {"securityProfile": "userns"}),
    ("rootless-false-privileged", {"rootless": False, "securityProfile": "privileged"}),
    ("size-256Mi", {"cache": {"size": "256Mi"}}),
    ("size-256Mi-in-bytes", {"cache": {"size": 268435456}}),
    ("size-quarter-Gi", {"cache": {"size": "0.25Gi"}}),
    ("size-exponent", {"cache": {"size": "5e9"}}),
    (
        "requests-equal-limits",
        {
            "resources": {
                "requests": {"memory": "2Gi", "cpu": 1},
                "limits": {"memory": "2Gi", "cpu": "1000m"},
            }
        },
    ),
    ("requests-without-limits", {"resources": {"requests": {"cpu": "100m", "memory": "1e3"}}}),
    (
        "resources-every-kind",
        {
            "resources": {
                "requests": {"cpu": 0, "ephemeral-storage": "1Gi"},
                "limits": {"nvidia.com/gpu": 1, "hugepages-2Mi": "1Gi", "cpu": "0.5"},
            }
        },
    ),
    (
        "args-near-misses",
        {
            "buildkitd": {
                "args": [
                    "--addrx",
                    "--configx=1",
                    "--rootless-x",
                    "--debug",
                    "--oci-worker-snapshotter=native",
                    "--tlscacert-dir",
                    "x--addr",
                ]
            }
        },
    ),
    ("platforms", {"buildkitd": {"platforms": ["linux/amd64", "linux/arm/v7", "linux/arm64"]}}),
    (
        "labels-at-the-limits",
        {
            "nodeSelector": {"example.com/pool": "build_ers-1.x", "a": "v" * 63},
            "podLabels": {
                ".".join(["p" * 63] * 4)[:253].rstrip(".") + "/" + "n" * 63: "",
                "x": "z",
            },
            "podAnnotations": {"example.com/note": "any text at all, spaces too"},
        },
    ),
    (
        "tolerations",
        {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoExecute"},
                {"operator": "Exists"},
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 30,
                },
            ]
        },
    ),
    (
        "names",
        {
            "priorityClassName": "high",
            "serviceAccountName": "builder.sa",
            "imagePullSecrets": [{"name": "regcred"}],
            "cache": {"storageClassName": "fast-ssd"},
            "tls": {"mode": "secret", "secretName": "b" * 253},
        },
    ),
    (
        "sans",
        {
            "tls": {
                "extraSANs": [
                    "buildkit.example.com",
                    "*.b.example.com",
                    "10.0.0.1",
                    "::1",
                    "::",
                    "fe80::1",
                    "2001:db8::8a2e:370:7334",
                    "2001:0db8:0000:0000:0000:0000:0000:0001",
                    "::ffff:10.0.0.1",
                    "1:2:3:4:5:6:7::",
                    "x" * 63 + ".example.com",
                ]
            }
        },
    ),
    ("image", {"image": "registry.example.com:5000/moby/buildkit:v0.34.2-rootless"}),
    ("cluster-ip-without-tls", {"tls": {"mode": "disabled"}}),
    (
        "node-port-without-tls-opted-in",
        {"tls": {"mode": "disabled"}, "service": {"type": "NodePort", "allowWithoutTLS": True}},
    ),
    (
        "load-balancer-without-tls-opted-in",
        {
            "tls": {"mode": "disabled"},
            "service": {"type": "LoadBalancer", "allowWithoutTLS": True},
        },
    ),
    ("load-balancer-with-tls", {"service": {"type": "LoadBalancer"}}),
    (
        "node-port-with-own-tls",
        {"tls": {"mode": "secret", "secretName": "t"}, "service": {"type": "NodePort"}},
    ),
    # Judged by the namespace's opt-in at admission, not by the model.
    (
        "insecure-entitlement-arg",
        {"buildkitd": {"args": ["--allow-insecure-entitlement=network.host"]}},
    ),
    ("empty", {}),
]


@pytest.mark.parametrize(
    ("spec", "field", "phrase"),
    [pytest.param(spec, field, phrase, id=name) for name, spec, field, phrase in REFUSED],
)
def test_malformed_builder_is_refused_naming_the_field(
    crd: None, kubectl: Any, ns: str, spec: dict[str, Any], field: str, phrase: str
) -> None:
    doc = builder(ns, spec)
    result = dry_run(kubectl, doc)
    assert result.returncode != 0, f"the API server accepted {spec}: {result.stdout}"
    assert field in result.stderr and phrase in result.stderr, result.stderr
    assert "rule evaluation error" not in result.stderr, result.stderr
    assert "compilation failed" not in result.stderr, result.stderr
    # The operator refuses it too (its own check stays, for Builders admitted before the
    # CRD carried the rules).
    assert model_problems(doc), f"the model accepts {spec}"


@pytest.mark.parametrize("spec", [pytest.param(spec, id=name) for name, spec in ACCEPTED])
def test_valid_builder_is_accepted(crd: None, kubectl: Any, ns: str, spec: dict[str, Any]) -> None:
    doc = builder(ns, spec)
    result = dry_run(kubectl, doc)
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout
    assert model_problems(doc) == []


def test_a_refused_builder_is_not_stored_and_an_accepted_one_is(
    crd: None, kubectl: Any, namespace: str
) -> None:
    """Without a dry run: the refused Builder does not exist afterwards, the valid one does,
    and an edit making it invalid is refused as well, leaving the stored spec as it was."""
    bad = builder(namespace, {"buildkitd": {"args": ["--addr=tcp://0.0.0.0:1"]}}, name="bad")
    refused = kubectl.run("apply", "-f", "-", input=yaml.safe_dump(bad))
    assert refused.returncode != 0 and "spec.buildkitd.args[0]" in refused.stderr
    assert kubectl("get", "bk", "-n", namespace, "-o", "name").strip() == ""

    good = builder(namespace, {"cache": {"size": "256Mi"}}, name="good")
    kubectl("apply", "-f", "-", input=yaml.safe_dump(good))
    edit = builder(namespace, {"cache": {"size": "255Mi"}}, name="good")
    refused = kubectl.run("apply", "-f", "-", input=yaml.safe_dump(edit))
    assert refused.returncode != 0 and "spec.cache.size" in refused.stderr
    stored = kubectl.json("get", "bk", "good", "-n", namespace)
    assert stored["spec"]["cache"]["size"] == "256Mi"
    assert stored["spec"]["service"]["allowWithoutTLS"] is False


def _unit_malformed_table() -> list[tuple[str, Any, str, str]]:
    """The malformed-Builder table of the model's unit tests."""
    path = REPO / "tests" / "unit" / "test_model.py"
    spec = importlib.util.spec_from_file_location("_unit_test_model", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.MALFORMED)


# What only the operator can judge: the schema cannot parse TOML.
OPERATOR_ONLY = {
    "config-debug-listener",
    "config-worker-binary",
    "config-unknown-key",
    "config-toml",
    "config-toml-value",
    "config-deep-array",
    "config-deep-inline-table",
}


def test_every_spec_the_model_refuses_is_refused_at_apply(crd: None, kubectl: Any, ns: str) -> None:
    """Each malformed spec of the model's own table is refused by the API server too, but for
    those the schema cannot express; those are accepted at apply and reported by the operator
    as phase Invalid."""
    accepted = []
    for name, doc, path, _phrase in _unit_malformed_table():
        if not path.startswith("spec") or not isinstance(doc, dict):
            continue  # metadata, apiVersion and kind are the API server's own business
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": "sweep", "namespace": ns}
        result = dry_run(kubectl, doc)
        if result.returncode == 0:
            accepted.append(name)
        else:
            assert "rule evaluation error" not in result.stderr, (name, result.stderr)
    assert sorted(accepted) == sorted(OPERATOR_ONLY)
