"""Validation of Builders: every malformed one is refused with a message naming the field,
and the contract's example is accepted with the documented defaults."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildkit_operator.api import (
    DEFAULT_IMAGE_ROOTFUL,
    DEFAULT_IMAGE_ROOTLESS,
    Builder,
    InvalidBuilder,
)

REPO = Path(__file__).resolve().parents[2]

CONTRACT_EXAMPLE = """
apiVersion: buildkit.dev/v1alpha1
kind: Builder
metadata: {name: team-a, namespace: ci}
spec:
  rootless: true
  replicas: 2
  nodeSelector: {kubernetes.io/arch: amd64}
  cache: {size: 50Gi, storageClassName: fast-ssd}
  buildkitd:
    maxParallelism: 4
    registryMirrors: {docker.io: [mirror.internal:5000]}
"""


def manifest(spec: Any = None, **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": "team-a", "namespace": "ci"},
        "spec": {} if spec is None else spec,
    }
    doc.update(top)
    return doc


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(InvalidBuilder) as caught:
        Builder.from_manifest(doc)
    return caught.value.problems


# (id, document, path the message must name, phrase it must contain)
MALFORMED: list[tuple[str, Any, str, str]] = [
    # replicas
    ("replicas-string", manifest({"replicas": "two"}), "spec.replicas", "valid integer"),
    ("replicas-bool", manifest({"replicas": True}), "spec.replicas", "valid integer"),
    ("replicas-fraction", manifest({"replicas": 1.5}), "spec.replicas", "valid integer"),
    (
        "replicas-negative",
        manifest({"replicas": -1}),
        "spec.replicas",
        "greater than or equal to 0",
    ),
    ("replicas-too-many", manifest({"replicas": 65}), "spec.replicas", "less than or equal to 64"),
    # autoscale
    (
        "autoscale-and-replicas",
        manifest({"replicas": 1, "autoscale": {"maxReplicas": 3}}),
        "spec",
        "replicas and autoscale are exclusive",
    ),
    (
        "autoscale-min-over-max",
        manifest({"autoscale": {"minReplicas": 4, "maxReplicas": 3}}),
        "spec.autoscale",
        "minReplicas (4) must not be more than maxReplicas (3)",
    ),
    ("autoscale-no-max", manifest({"autoscale": {}}), "spec.autoscale.maxReplicas", "required"),
    (
        "autoscale-max-zero",
        manifest({"autoscale": {"maxReplicas": 0}}),
        "spec.autoscale.maxReplicas",
        "greater than or equal to 1",
    ),
    (
        "autoscale-max-too-many",
        manifest({"autoscale": {"maxReplicas": 65}}),
        "spec.autoscale.maxReplicas",
        "less than or equal to 64",
    ),
    (
        "autoscale-window",
        manifest({"autoscale": {"maxReplicas": 2, "scaleUpAfter": "30"}}),
        "spec.autoscale.scaleUpAfter",
        "duration",
    ),
    (
        "autoscale-min-zero-without-idle-timeout",
        manifest({"autoscale": {"minReplicas": 0, "maxReplicas": 2}}),
        "spec",
        "set idleTimeout",
    ),
    (
        "autoscale-with-pools",
        manifest({"autoscale": {"maxReplicas": 2}, "pools": [{"platform": "linux/arm64"}]}),
        "spec",
        "set autoscale in each pool",
    ),
    (
        "pool-autoscale-and-replicas",
        manifest(
            {"pools": [{"platform": "linux/arm64", "replicas": 2, "autoscale": {"maxReplicas": 3}}]}
        ),
        "spec.pools[0]",
        "replicas and autoscale are exclusive",
    ),
    (
        "pool-autoscale-min-over-max",
        manifest(
            {
                "pools": [
                    {"platform": "linux/arm64", "autoscale": {"minReplicas": 3, "maxReplicas": 2}}
                ]
            }
        ),
        "spec.pools[0].autoscale",
        "must not be more than maxReplicas",
    ),
    # booleans
    ("rootless-string", manifest({"rootless": "false"}), "spec.rootless", "valid boolean"),
    ("retain-string", manifest({"cache": {"retain": "yes"}}), "spec.cache.retain", "boolean"),
    ("no-create-string", manifest({"noCreate": "true"}), "spec.noCreate", "valid boolean"),
    # cache
    ("size-gib", manifest({"cache": {"size": "50Gib"}}), "spec.cache.size", "not a quantity"),
    ("size-tiny", manifest({"cache": {"size": "100m"}}), "spec.cache.size", "at least 256Mi"),
    ("size-small", manifest({"cache": {"size": "255Mi"}}), "spec.cache.size", "too small"),
    ("size-space", manifest({"cache": {"size": "50 Gi"}}), "spec.cache.size", "not a quantity"),
    (
        "size-negative",
        manifest({"cache": {"size": "-1Gi"}}),
        "spec.cache.size",
        "greater than zero",
    ),
    ("size-zero", manifest({"cache": {"size": 0}}), "spec.cache.size", "greater than zero"),
    ("size-zero-gi", manifest({"cache": {"size": "0Gi"}}), "spec.cache.size", "greater than zero"),
    ("size-bool", manifest({"cache": {"size": True}}), "spec.cache.size", "not a boolean"),
    ("size-list", manifest({"cache": {"size": ["1Gi"]}}), "spec.cache.size", "quantity"),
    ("cache-type", manifest({"cache": {"type": "nfs"}}), "spec.cache.type", "'persistent' or"),
    (
        "storage-class",
        manifest({"cache": {"storageClassName": "Fast_SSD"}}),
        "spec.cache.storageClassName",
        "not a valid object name",
    ),
    ("cache-typo", manifest({"cache": {"sise": "1Gi"}}), "spec.cache.sise", "unknown field"),
    # tls
    ("tls-mode", manifest({"tls": {"mode": "manual"}}), "spec.tls.mode", "'auto', 'secret' or"),
    (
        "tls-secret-without-name",
        manifest({"tls": {"mode": "secret"}}),
        "spec.tls.secretName",
        "required when tls.mode is secret",
    ),
    (
        "tls-secret-empty-name",
        manifest({"tls": {"mode": "secret", "secretName": ""}}),
        "spec.tls.secretName",
        "required when tls.mode is secret",
    ),
    (
        "tls-secret-bad-name",
        manifest({"tls": {"mode": "secret", "secretName": "My_Cert"}}),
        "spec.tls.secretName",
        "not a valid object name",
    ),
    (
        "tls-san",
        manifest({"tls": {"extraSANs": ["not a name!"]}}),
        "spec.tls.extraSANs",
        "neither an IP address nor a DNS name",
    ),
    (
        "tls-san-long-label",
        manifest({"tls": {"extraSANs": ["x" * 64 + ".example.com"]}}),
        "spec.tls.extraSANs",
        "neither an IP address nor a DNS name",
    ),
    (
        "tls-san-ip-zone",
        manifest({"tls": {"extraSANs": ["fe80::1%eth0"]}}),
        "spec.tls.extraSANs",
        "zone",
    ),
    ("tls-case", manifest({"tls": {"secretname": "x"}}), "spec.tls.secretname", "unknown field"),
    # nodeSelector
    (
        "node-selector-int",
        manifest({"nodeSelector": {"kubernetes.io/arch": 5}}),
        "spec.nodeSelector.kubernetes.io/arch",
        "valid string",
    ),
    (
        "node-selector-bool",
        manifest({"nodeSelector": {"ssd": True}}),
        "spec.nodeSelector.ssd",
        "valid string",
    ),
    (
        "node-selector-key",
        manifest({"nodeSelector": {"bad key!": "x"}}),
        "spec.nodeSelector",
        "label key 'bad key!'",
    ),
    (
        "node-selector-prefix",
        manifest({"nodeSelector": {"Example_COM/arch": "amd64"}}),
        "spec.nodeSelector",
        "prefix must be a DNS subdomain",
    ),
    (
        "node-selector-value",
        manifest({"nodeSelector": {"disk": "fast ssd"}}),
        "spec.nodeSelector",
        "label value 'fast ssd'",
    ),
    (
        "node-selector-long-value",
        manifest({"nodeSelector": {"disk": "v" * 64}}),
        "spec.nodeSelector",
        "at most 63",
    ),
    ("node-selector-list", manifest({"nodeSelector": ["a=b"]}), "spec.nodeSelector", "dictionary"),
    # buildkitd
    (
        "config-toml",
        manifest({"buildkitd": {"config": "[worker.oci\nmax-parallelism = 2\n"}}),
        "spec.buildkitd.config",
        "not valid TOML",
    ),
    (
        "config-toml-value",
        manifest({"buildkitd": {"config": "debug = yes\n"}}),
        "spec.buildkitd.config",
        "line 1",
    ),
    (
        # Deeper than the parser's recursion: refused, not a crash of every pass.
        "config-deep-array",
        manifest({"buildkitd": {"config": "a = " + "[" * 5000 + "]" * 5000 + "\n"}}),
        "spec.buildkitd.config",
        "nested deeper than 32 levels",
    ),
    (
        "config-deep-inline-table",
        manifest({"buildkitd": {"config": "a = " + "{b = " * 40 + "1" + "}" * 40 + "\n"}}),
        "spec.buildkitd.config",
        "nested deeper than 32 levels",
    ),
    (
        # The reserved --debugaddr, reopened through the config file.
        "config-debug-listener",
        manifest({"buildkitd": {"config": '[grpc]\ndebugAddress = "0.0.0.0:6060"\n'}}),
        "spec.buildkitd.config",
        "key grpc.debugAddress is not allowed",
    ),
    (
        "config-worker-binary",
        manifest({"buildkitd": {"config": '[worker.oci]\nbinary = "/bin/sh"\n'}}),
        "spec.buildkitd.config",
        "key worker.oci.binary is not allowed",
    ),
    (
        "config-unknown-key",
        manifest({"buildkitd": {"config": "[worker.oci]\nmax_parallelism = 2\n"}}),
        "spec.buildkitd.config",
        "key worker.oci.max_parallelism is not read by buildkitd",
    ),
    (
        "args-oci-worker-binary",
        manifest({"buildkitd": {"args": ["--oci-worker-binary=/bin/sh"]}}),
        "spec.buildkitd.args",
        "--oci-worker-binary reaches binaries",
    ),
    (
        "args-containerd-worker-addr",
        manifest({"buildkitd": {"args": ["-containerd-worker-addr", "/run/containerd.sock"]}}),
        "spec.buildkitd.args",
        "--containerd-worker-addr reaches binaries",
    ),
    (
        "args-addr",
        manifest({"buildkitd": {"args": ["--addr", "tcp://0.0.0.0:9999"]}}),
        "spec.buildkitd.args",
        "--addr is set by the operator",
    ),
    (
        "args-addr-equals",
        manifest({"buildkitd": {"args": ["--addr=tcp://0.0.0.0:9999"]}}),
        "spec.buildkitd.args",
        "--addr is set by the operator",
    ),
    (
        "args-single-dash",
        manifest({"buildkitd": {"args": ["-config=/tmp/x.toml"]}}),
        "spec.buildkitd.args",
        "--config is set by the operator",
    ),
    (
        "args-tls",
        manifest({"buildkitd": {"args": ["--tlscert", "/x.pem"]}}),
        "spec.buildkitd.args",
        "--tlscert",
    ),
    (
        "args-root",
        manifest({"buildkitd": {"args": ["--root=/data"]}}),
        "spec.buildkitd.args",
        "--root",
    ),
    ("args-int", manifest({"buildkitd": {"args": [1]}}), "spec.buildkitd.args[0]", "valid string"),
    (
        "platform-os-only",
        manifest({"buildkitd": {"platforms": ["linux"]}}),
        "spec.buildkitd.platforms",
        "'linux' is not a platform",
    ),
    (
        "platform-case",
        manifest({"buildkitd": {"platforms": ["Linux/AMD64"]}}),
        "spec.buildkitd.platforms",
        "is not a platform",
    ),
    (
        "platform-comma",
        manifest({"buildkitd": {"platforms": ["linux/amd64,linux/arm64"]}}),
        "spec.buildkitd.platforms",
        "is not a platform",
    ),
    (
        "max-parallelism-zero",
        manifest({"buildkitd": {"maxParallelism": 0}}),
        "spec.buildkitd.maxParallelism",
        "greater than or equal to 1",
    ),
    (
        "max-parallelism-string",
        manifest({"buildkitd": {"maxParallelism": "4"}}),
        "spec.buildkitd.maxParallelism",
        "valid integer",
    ),
    (
        "mirrors-not-list",
        manifest({"buildkitd": {"registryMirrors": {"docker.io": "mirror:5000"}}}),
        "spec.buildkitd.registryMirrors.docker.io",
        "valid list",
    ),
    (
        "insecure-not-list",
        manifest({"buildkitd": {"insecureRegistries": "registry:5000"}}),
        "spec.buildkitd.insecureRegistries",
        "valid list",
    ),
    # pod settings
    (
        "toleration-effect",
        manifest({"tolerations": [{"key": "k", "effect": "Sometimes"}]}),
        "spec.tolerations[0].effect",
        "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'",
    ),
    (
        "toleration-operator",
        manifest({"tolerations": [{"key": "k", "operator": "In"}]}),
        "spec.tolerations[0].operator",
        "'Exists' or 'Equal'",
    ),
    (
        "toleration-exists-with-value",
        manifest({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
        "spec.tolerations[0]",
        "value must be empty when operator is Exists",
    ),
    (
        "toleration-no-key",
        manifest({"tolerations": [{"value": "v"}]}),
        "spec.tolerations[0]",
        "operator must be Exists when key is empty",
    ),
    (
        "toleration-seconds",
        manifest({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}),
        "spec.tolerations[0]",
        "only allowed with effect NoExecute",
    ),
    (
        "toleration-unknown",
        manifest({"tolerations": [{"key": "k", "effects": "NoSchedule"}]}),
        "spec.tolerations[0].effects",
        "unknown field",
    ),
    ("tolerations-map", manifest({"tolerations": {"key": "k"}}), "spec.tolerations", "valid list"),
    (
        "service-type",
        manifest({"service": {"type": "Ingress"}}),
        "spec.service.type",
        "'ClusterIP', 'NodePort' or 'LoadBalancer'",
    ),
    (
        "limits-quantity",
        manifest({"resources": {"limits": {"memory": "2GB"}}}),
        "spec.resources.limits.memory",
        "not a quantity",
    ),
    (
        "requests-negative",
        manifest({"resources": {"requests": {"cpu": "-1"}}}),
        "spec.resources.requests.cpu",
        "must not be negative",
    ),
    (
        "requests-above-limits",
        manifest({"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "2Gi"}}}),
        "spec.resources",
        "requests.memory (4Gi) must not exceed limits.memory (2Gi)",
    ),
    (
        "resource-name",
        manifest({"resources": {"limits": {"gpu": 1}}}),
        "spec.resources.limits",
        "'gpu' is not a resource",
    ),
    (
        "resources-typo",
        manifest({"resources": {"limit": {"cpu": "1"}}}),
        "spec.resources.limit",
        "unknown field",
    ),
    ("image-empty", manifest({"image": ""}), "spec.image", "at least 1 character"),
    ("image-space", manifest({"image": "moby/buildkit "}), "spec.image", "whitespace"),
    (
        "priority-class",
        manifest({"priorityClassName": "High Priority"}),
        "spec.priorityClassName",
        "not a valid object name",
    ),
    (
        "service-account",
        manifest({"serviceAccountName": "Builder"}),
        "spec.serviceAccountName",
        "not a valid object name",
    ),
    (
        "pull-secret-no-name",
        manifest({"imagePullSecrets": [{}]}),
        "spec.imagePullSecrets[0].name",
        "Field required",
    ),
    (
        "pull-secret-string",
        manifest({"imagePullSecrets": ["regcred"]}),
        "spec.imagePullSecrets[0]",
        "valid dictionary",
    ),
    (
        "pod-label-value",
        manifest({"podLabels": {"team": "a b"}}),
        "spec.podLabels",
        "label value 'a b'",
    ),
    (
        "pod-annotation-key",
        manifest({"podAnnotations": {"not valid/": "x"}}),
        "spec.podAnnotations",
        "label key",
    ),
    ("affinity-string", manifest({"affinity": "zone-a"}), "spec.affinity", "valid dictionary"),
    (
        "node-port-without-tls",
        manifest({"tls": {"mode": "disabled"}, "service": {"type": "NodePort"}}),
        "spec.service",
        "service.type NodePort with tls.mode disabled exposes an unauthenticated builder",
    ),
    (
        "load-balancer-without-tls",
        manifest({"tls": {"mode": "disabled"}, "service": {"type": "LoadBalancer"}}),
        "spec.service",
        "set service.allowWithoutTLS: true",
    ),
    (
        "allow-without-tls-string",
        manifest({"service": {"allowWithoutTLS": "yes"}}),
        "spec.service.allowWithoutTLS",
        "valid boolean",
    ),
    (
        "node-selector-empty-prefix",
        manifest({"nodeSelector": {"/arch": "amd64"}}),
        "spec.nodeSelector",
        "prefix must be a DNS subdomain",
    ),
    (
        "node-selector-too-many",
        manifest({"nodeSelector": {f"k{i}": "v" for i in range(65)}}),
        "spec.nodeSelector",
        "at most 64 items",
    ),
    (
        "args-too-many",
        manifest({"buildkitd": {"args": ["--debug"] * 129}}),
        "spec.buildkitd.args",
        "at most 128 items",
    ),
    (
        "args-too-long",
        manifest({"buildkitd": {"args": ["--x=" + "a" * 4096]}}),
        "spec.buildkitd.args",
        "longer than 4096",
    ),
    (
        "image-too-long",
        manifest({"image": "r/" + "i" * 1023}),
        "spec.image",
        "at most 1024 characters",
    ),
    (
        "tolerations-too-many",
        manifest({"tolerations": [{"operator": "Exists"}] * 65}),
        "spec.tolerations",
        "at most 64 items",
    ),
    ("spec-unknown", manifest({"replica": 2}), "spec.replica", "unknown field"),
    # the object itself
    ("spec-string", manifest("rootless"), "spec", "valid dictionary"),
    ("spec-list", manifest([{"replicas": 1}]), "spec", "valid dictionary"),
    (
        "name-underscore",
        manifest(metadata={"name": "Bad_Name"}),
        "metadata.name",
        "'Bad_Name' is not a valid name",
    ),
    ("name-254", manifest(metadata={"name": "a" * 254}), "metadata.name", "at most 253"),
    ("name-dot-end", manifest(metadata={"name": "team."}), "metadata.name", "not a valid name"),
    ("name-missing", manifest(metadata={"namespace": "ci"}), "metadata.name", "not a valid name"),
    ("name-int", manifest(metadata={"name": 7}), "metadata.name", "valid string"),
    (
        "namespace",
        manifest(metadata={"name": "a", "namespace": "Team_A"}),
        "metadata.namespace",
        "not a valid namespace name",
    ),
    ("metadata-string", manifest(metadata="team-a"), "metadata", "must be a mapping"),
    (
        "api-version",
        manifest(apiVersion="buildkit.dev/v1"),
        "apiVersion/kind",
        "expected buildkit.dev/v1alpha1 Builder, got buildkit.dev/v1",
    ),
    ("kind", manifest(kind="Builders"), "apiVersion/kind", "got buildkit.dev/v1alpha1 Builders"),
    ("not-a-mapping", ["a", "list"], "(document)", "must be a mapping"),
]


@pytest.mark.parametrize(
    ("document", "path", "phrase"),
    [pytest.param(doc, path, phrase, id=name) for name, doc, path, phrase in MALFORMED],
)
def test_malformed_builder_names_the_field(document: Any, path: str, phrase: str) -> None:
    problems = problems_of(document)
    assert problems, "no problem reported"
    for problem in problems:
        assert "\n" not in problem, problem
    at_path = [p for p in problems if p.split(": ", 1)[0] == path]
    assert at_path, f"no problem reported at {path}: {problems}"
    assert any(phrase.lower() in p.lower() for p in at_path), (phrase, at_path)


def test_the_table_is_big_and_has_no_duplicates() -> None:
    names = [name for name, *_ in MALFORMED]
    assert len(names) >= 25 and len(set(names)) == len(names)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        manifest({"replicas": -1, "cache": {"size": "50Gib"}, "service": {"type": "x"}})
    )
    assert {p.split(":", 1)[0] for p in problems} == {
        "spec.replicas",
        "spec.cache.size",
        "spec.service.type",
    }
    # One line a person can read, e.g. in status.message or on stderr.
    error = InvalidBuilder(problems)
    assert "\n" not in str(error) and "spec.cache.size" in str(error)


def test_invalid_builder_is_a_value_error_not_a_pydantic_one() -> None:
    with pytest.raises(ValueError, match=r"spec\.replicas"):
        Builder.from_manifest(manifest({"replicas": -1}))
    try:
        Builder.from_manifest(manifest({"replicas": -1}))
    except InvalidBuilder as err:
        assert "pydantic" not in str(err) and "errors.pydantic.dev" not in str(err)


# --- accepted -----------------------------------------------------------------------------


def test_contract_example_validates_with_documented_defaults() -> None:
    builder = Builder.from_manifest(yaml.safe_load(CONTRACT_EXAMPLE))
    assert (builder.name, builder.namespace) == ("team-a", "ci")
    spec = builder.spec
    assert spec.rootless is True
    assert spec.replicas == 2
    assert spec.node_selector == {"kubernetes.io/arch": "amd64"}
    assert spec.cache.size == "50Gi"
    assert spec.cache.storage_class_name == "fast-ssd"
    assert spec.buildkitd.max_parallelism == 4
    assert spec.buildkitd.registry_mirrors == {"docker.io": ["mirror.internal:5000"]}
    # What the example leaves out takes the documented defaults.
    assert spec.image is None and spec.effective_image == DEFAULT_IMAGE_ROOTLESS
    assert spec.cache.type == "persistent"
    assert spec.cache.retain is True
    assert spec.tls.mode == "auto" and spec.tls.secret_name is None and spec.tls.extra_sans == []
    assert spec.service.type == "ClusterIP"
    assert spec.no_create is False and spec.no_recreate is False
    assert spec.buildkitd.args == [] and spec.buildkitd.platforms == []
    assert spec.buildkitd.insecure_registries == [] and spec.buildkitd.config is None
    assert spec.tolerations == [] and spec.affinity is None and spec.resources is None
    assert spec.pod_labels == {} and spec.pod_annotations == {}


def test_examples_file_is_the_contract_example() -> None:
    example = yaml.safe_load((REPO / "examples" / "builder.yaml").read_text())
    assert example == yaml.safe_load(CONTRACT_EXAMPLE)
    Builder.from_manifest(example)


def test_empty_spec_takes_every_default() -> None:
    for spec in (None, {}):
        doc = manifest()
        doc["spec"] = spec
        built = Builder.from_manifest(doc).spec
        assert (built.rootless, built.replicas) == (True, 1)
        assert (built.cache.type, built.cache.effective_size, built.cache.retain) == (
            "persistent",
            "20Gi",
            True,
        )
        assert (built.tls.mode, built.service.type) == ("auto", "ClusterIP")
    rootful = Builder.from_manifest(manifest({"rootless": False})).spec
    assert rootful.effective_image == DEFAULT_IMAGE_ROOTFUL
    assert DEFAULT_IMAGE_ROOTLESS == DEFAULT_IMAGE_ROOTFUL + "-rootless"
    assert ":v" in DEFAULT_IMAGE_ROOTFUL and DEFAULT_IMAGE_ROOTFUL.split(":")[-1] != "latest"


def test_namespace_defaults_to_the_given_one() -> None:
    doc = manifest(metadata={"name": "x"})
    assert Builder.from_manifest(doc).namespace == "default"
    assert Builder.from_manifest(doc, namespace="ci").namespace == "ci"


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("size-int", {"cache": {"size": 21474836480}}),
    ("size-decimal", {"cache": {"size": "1.5G"}}),
    ("size-exponent", {"cache": {"size": "5e9"}}),
    ("replicas-zero", {"replicas": 0}),
    ("replicas-max", {"replicas": 64}),
    ("ephemeral", {"cache": {"type": "ephemeral", "size": "10Gi", "retain": False}}),
    ("tls-secret", {"tls": {"mode": "secret", "secretName": "buildkit-cert"}}),
    ("tls-disabled", {"tls": {"mode": "disabled"}}),
    (
        "sans",
        {"tls": {"extraSANs": ["buildkit.example.com", "*.b.example.com", "10.0.0.1", "::1"]}},
    ),
    (
        "tolerations",
        {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"},
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
        "resources",
        {
            "resources": {
                "requests": {"cpu": 1, "memory": "2Gi"},
                "limits": {
                    "cpu": "4",
                    "memory": "8Gi",
                    "nvidia.com/gpu": 1,
                    "hugepages-2Mi": "1Gi",
                },
            }
        },
    ),
    ("platforms", {"buildkitd": {"platforms": ["linux/amd64", "linux/arm/v7", "linux/arm64"]}}),
    ("args", {"buildkitd": {"args": ["--debug", "--oci-worker-snapshotter=native"]}}),
    ("labels", {"nodeSelector": {"example.com/pool": "build_ers-1.x"}, "podLabels": {"a": ""}}),
    (
        "names",
        {
            "priorityClassName": "high",
            "serviceAccountName": "builder.sa",
            "imagePullSecrets": [{"name": "regcred"}],
        },
    ),
    ("free-form", {"affinity": {"nodeAffinity": {"x": 1}}, "topologySpreadConstraints": [{}]}),
    ("config", {"buildkitd": {"config": "debug = true\n[worker.oci]\ngc = false\n"}}),
    ("size-minimum", {"cache": {"size": "256Mi"}}),
    ("size-minimum-bytes", {"cache": {"size": 268435456}}),
    (
        "requests-equal-limits",
        {
            "resources": {
                "requests": {"cpu": "1", "memory": "2Gi"},
                "limits": {"cpu": "1000m", "memory": "2Gi"},
            }
        },
    ),
    ("args-near-reserved", {"buildkitd": {"args": ["--addrx", "--rootless-x", "x--addr"]}}),
    (
        "node-port-without-tls-opted-in",
        {"tls": {"mode": "disabled"}, "service": {"type": "NodePort", "allowWithoutTLS": True}},
    ),
    ("load-balancer-with-tls", {"service": {"type": "LoadBalancer"}}),
    ("sans-ipv6", {"tls": {"extraSANs": ["::", "1:2:3:4:5:6:7::", "::ffff:10.0.0.1"]}}),
]


@pytest.mark.parametrize("spec", [pytest.param(spec, id=name) for name, spec in ACCEPTED])
def test_valid_specs_are_accepted(spec: dict[str, Any]) -> None:
    Builder.from_manifest(manifest(copy.deepcopy(spec)))


@pytest.mark.parametrize(
    "name", ["a", "0", "1team", "team-a", "a.b.c", "x" * 253, ".".join(["a" * 63] * 3) + ".b"]
)
def test_valid_names_are_accepted(name: str) -> None:
    assert Builder.from_manifest(manifest(metadata={"name": name})).name == name
