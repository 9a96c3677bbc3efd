"""The Builder CRD: crds/ is what the model generates, the schema is structural, and every
field of the API contract is there with its description, default and allowed values."""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel

from buildkit_operator.api import Builder, BuilderSpec, BuilderStatus
from buildkit_operator.api.crd import builder_crd, crd_yaml
from buildkit_operator.render import render_builder
from fuzzing import fuzz_settings

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "crds" / "builders.buildkit.dev.yaml"
REGENERATE = ".venv/bin/buildkit-operator crd > crds/builders.buildkit.dev.yaml (or: make crd)"

# Every spec field of the contract (docs: builder-api.md), as `kubectl explain` paths.
CONTRACT_FIELDS = [
    "rootless",
    "image",
    "replicas",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "serviceAccountName",
    "imagePullSecrets",
    "podLabels",
    "podAnnotations",
    "resources",
    "buildkitd",
    "buildkitd.args",
    "buildkitd.maxParallelism",
    "buildkitd.registryMirrors",
    "buildkitd.insecureRegistries",
    "buildkitd.platforms",
    "buildkitd.config",
    "cache",
    "cache.type",
    "cache.size",
    "cache.storageClassName",
    "cache.retain",
    "tls",
    "tls.mode",
    "tls.secretName",
    "tls.extraSANs",
    "service",
    "service.type",
    "noCreate",
    "noRecreate",
    "drain",
    "drain.gracePeriodSeconds",
    "drain.maxWaitSeconds",
]

CONTRACT_TYPES = {
    "rootless": "boolean",
    "image": "string",
    "replicas": "integer",
    "nodeSelector": "object",
    "tolerations": "array",
    "affinity": "object",
    "topologySpreadConstraints": "array",
    "priorityClassName": "string",
    "serviceAccountName": "string",
    "imagePullSecrets": "array",
    "podLabels": "object",
    "podAnnotations": "object",
    "resources": "object",
    "buildkitd.args": "array",
    "buildkitd.maxParallelism": "integer",
    "buildkitd.registryMirrors": "object",
    "buildkitd.insecureRegistries": "array",
    "buildkitd.platforms": "array",
    "buildkitd.config": "string",
    "cache.type": "string",
    "cache.storageClassName": "string",
    "cache.retain": "boolean",
    "tls.mode": "string",
    "tls.secretName": "string",
    "tls.extraSANs": "array",
    "service.type": "string",
    "noCreate": "boolean",
    "noRecreate": "boolean",
    "drain.gracePeriodSeconds": "integer",
    "drain.maxWaitSeconds": "integer",
}

CONTRACT_DEFAULTS = {
    "rootless": True,
    "cache.type": "persistent",
    "cache.retain": True,
    "tls.mode": "auto",
    "service.type": "ClusterIP",
    "noCreate": False,
    "noRecreate": False,
    "drain.gracePeriodSeconds": 600,
}

CONTRACT_ENUMS = {
    "cache.type": ["persistent", "ephemeral"],
    "tls.mode": ["auto", "secret", "disabled"],
    "service.type": ["ClusterIP", "NodePort", "LoadBalancer"],
}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return builder_crd()


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return dict(only)


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> dict[str, Any]:
    return dict(version["schema"]["openAPIV3Schema"])


@pytest.fixture(scope="module")
def spec(root: dict[str, Any]) -> dict[str, Any]:
    return dict(root["properties"]["spec"])


def prop(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        assert part in node.get("properties", {}), f"spec.{path}: not in the CRD schema"
        node = node["properties"][part]
    return node


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties, items, additionalProperties, junctors)."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")
    for junctor in ("anyOf", "allOf", "oneOf"):
        for index, option in enumerate(node.get(junctor, [])):
            yield from walk(option, f"{path}<{junctor}{index}>")


def properties(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property below ``node``, at every depth."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from properties(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from properties(node[key], path)


# --- crds/ agrees with the generator ------------------------------------------------------


def test_committed_crd_is_what_the_model_generates() -> None:
    assert COMMITTED.exists(), f"{COMMITTED.relative_to(REPO)} is missing; run {REGENERATE}"
    committed = COMMITTED.read_text()
    generated = crd_yaml()
    if committed != generated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "crds/builders.buildkit.dev.yaml (committed)",
                "generated from the model",
                n=2,
            )
        )
        pytest.fail(
            f"crds/ is out of date with the model; regenerate it with\n  {REGENERATE}\n{diff}",
            pytrace=False,
        )
    assert yaml.safe_load(committed) == builder_crd()


# --- structural schema --------------------------------------------------------------------


def test_schema_has_no_json_schema_leftovers(root: dict[str, Any]) -> None:
    for path, node in walk(root):
        for key in ("$ref", "$defs", "definitions", "title", "nullable", "const"):
            assert key not in node, f"{path or '.'}: {key} is not allowed in a structural schema"
        assert node.get("type") != "null", f"{path}: type null"
        for junctor in ("anyOf", "oneOf", "allOf"):
            for option in node.get(junctor, []):
                assert option.get("type") != "null", f"{path}: {junctor} with null"
        assert not isinstance(node.get("type"), list), f"{path}: one type per node"


def test_only_int_or_string_uses_any_of(root: dict[str, Any]) -> None:
    seen = 0
    for path, node in walk(root):
        assert "oneOf" not in node and "allOf" not in node, path
        if "anyOf" in node:
            seen += 1
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
    assert seen, "cache.size and resources are quantities: int-or-string"


def test_every_node_has_a_type(root: dict[str, Any]) -> None:
    for path, node in walk(root):
        if "<anyOf" in path:
            continue
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path or '.'}: no type"
        if "properties" in node:
            assert node["type"] == "object", path


def test_defaults_are_allowed_values(root: dict[str, Any]) -> None:
    for path, node in walk(root):
        if "default" in node and "enum" in node:
            assert node["default"] in node["enum"], path
        if isinstance(node.get("default"), dict):
            assert node.get("type") == "object", path


# --- every field of the contract, described, defaulted, enumerated ---------------------------


@pytest.mark.parametrize("field", CONTRACT_FIELDS)
def test_contract_field_is_present_with_a_description(spec: dict[str, Any], field: str) -> None:
    node = prop(spec, field)
    assert node.get("description", "").strip(), f"spec.{field}: no description"


def test_every_property_at_every_depth_has_a_description(root: dict[str, Any]) -> None:
    missing = [
        path
        for part in ("spec", "status")
        for path, node in properties(root["properties"][part], part)
        if not str(node.get("description", "")).strip()
    ]
    # metadata is the exception: the API server refuses anything but its type there.
    missing += [
        name
        for name, node in root["properties"].items()
        if name != "metadata" and not str(node.get("description", "")).strip()
    ]
    assert root["properties"]["metadata"] == {"type": "object"}
    assert root["properties"]["spec"]["description"].strip()
    assert root["properties"]["status"]["description"].strip()
    assert not missing, f"properties without a description: {missing}"


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model inside an annotation such as ``X | None`` or ``list[X]``, is it a list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for arg in get_args(annotation):
        model, is_list = _nested_model(arg)
        if model is not None:
            return model, is_list or get_origin(annotation) is list
    return None, False


def model_and_schema(
    model: type[BaseModel], node: dict[str, Any], path: str
) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(path, model field, schema property) for every field of ``model`` at every depth."""
    for name, field in model.model_fields.items():
        wire = field.alias or name
        child = node.get("properties", {}).get(wire, {})
        yield f"{path}.{wire}", field, child
        nested, is_list = _nested_model(field.annotation)
        if nested is not None:
            yield from model_and_schema(
                nested, child.get("items", {}) if is_list else child, f"{path}.{wire}"
            )


@pytest.mark.parametrize("model", [BuilderSpec, BuilderStatus])
def test_descriptions_come_from_the_model(root: dict[str, Any], model: type[BaseModel]) -> None:
    part = "spec" if model is BuilderSpec else "status"
    pairs = list(model_and_schema(model, root["properties"][part], part))
    assert len(pairs) >= (len(CONTRACT_FIELDS) if model is BuilderSpec else 10)
    for path, field, node in pairs:
        assert node, f"{path}: a field of the model, missing from the CRD"
        assert field.description, f"{path}: the model field has no description"
        assert node["description"] == field.description, path


def test_schema_objects_have_exactly_the_model_fields(root: dict[str, Any]) -> None:
    """No property in the CRD that the model does not know (the API server would keep it,
    the operator would reject it), and none missing."""

    def check(model: type[BaseModel], node: dict[str, Any], path: str) -> None:
        wire = {field.alias or name for name, field in model.model_fields.items()}
        assert set(node["properties"]) == wire, path
        for name, field in model.model_fields.items():
            nested, is_list = _nested_model(field.annotation)
            if nested is not None:
                child = node["properties"][field.alias or name]
                check(nested, child["items"] if is_list else child, f"{path}.{name}")

    check(BuilderSpec, root["properties"]["spec"], "spec")
    check(BuilderStatus, root["properties"]["status"], "status")


@pytest.mark.parametrize(("field", "kind"), sorted(CONTRACT_TYPES.items()))
def test_contract_field_types(spec: dict[str, Any], field: str, kind: str) -> None:
    assert prop(spec, field).get("type") == kind, f"spec.{field}"


@pytest.mark.parametrize(("field", "default"), sorted(CONTRACT_DEFAULTS.items()))
def test_contract_defaults(spec: dict[str, Any], field: str, default: Any) -> None:
    assert prop(spec, field).get("default") == default, f"spec.{field}"


def test_replicas_default_is_the_operators(spec: dict[str, Any]) -> None:
    """The contract's replicas default of 1 is filled in by the operator, not the API
    server: replicas and autoscale are exclusive at apply, and a replicas the API server
    filled in could not be told from one a user wrote."""
    assert "default" not in prop(spec, "replicas")
    assert "default" not in prop(spec, "pools")["items"]["properties"]["replicas"]
    assert BuilderSpec.model_validate({}).replicas == 1
    assert (
        BuilderSpec.model_validate({"pools": [{"platform": "linux/arm64"}]}).pools[0].replicas == 1
    )


@pytest.mark.parametrize(("field", "values"), sorted(CONTRACT_ENUMS.items()))
def test_contract_enums(spec: dict[str, Any], field: str, values: list[str]) -> None:
    assert prop(spec, field)["enum"] == values, f"spec.{field}"


def test_numbers_and_maps(spec: dict[str, Any]) -> None:
    assert prop(spec, "replicas")["minimum"] == 0
    assert prop(spec, "buildkitd.maxParallelism")["minimum"] == 1
    # Label values are at most 63 characters (Kubernetes' rule); annotation values are free.
    for field in ("nodeSelector", "podLabels"):
        assert prop(spec, field)["additionalProperties"] == {"type": "string", "maxLength": 63}
    assert prop(spec, "podAnnotations")["additionalProperties"] == {"type": "string"}
    mirrors = prop(spec, "buildkitd.registryMirrors")["additionalProperties"]
    assert mirrors == {"type": "array", "items": {"type": "string"}}
    size = prop(spec, "cache.size")
    assert size["x-kubernetes-int-or-string"] is True
    # The API server checks string quantities against the pattern at kubectl apply.
    for good in ("50Gi", "500Mi", "1.5G", "2", "1e9"):
        assert re.fullmatch(size["pattern"], good), good
    for bad in ("50Gib", "50 Gi", "Gi", "fifty", "50GB"):
        assert not re.fullmatch(size["pattern"], bad), bad
    limits = prop(spec, "resources.limits")["additionalProperties"]
    assert limits["x-kubernetes-int-or-string"] is True
    # Free-form PodSpec pieces keep what the user wrote.
    assert prop(spec, "affinity")["x-kubernetes-preserve-unknown-fields"] is True
    items = prop(spec, "topologySpreadConstraints")["items"]
    assert items["x-kubernetes-preserve-unknown-fields"] is True


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's defaulting does to ``value`` (objects present or defaulted)."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = dict(value)
    for name, child in schema["properties"].items():
        if name not in out and "default" in child:
            out[name] = child["default"]
        if name in out:
            out[name] = apply_defaults(child, out[name])
    return out


def test_api_server_defaults_match_the_model(root: dict[str, Any]) -> None:
    """A Builder applied with no spec gets, from the API server, what the operator assumes."""
    defaulted = apply_defaults(root, {"apiVersion": "buildkit.dev/v1alpha1", "kind": "Builder"})
    assert defaulted["spec"] == {
        "rootless": True,
        "buildkitd": {},
        # No size: the operator's install-wide default fills it in (20Gi unless set).
        "cache": {"type": "persistent", "retain": True},
        "tls": {"mode": "auto", "sharedClientCertificate": True},
        "service": {"type": "ClusterIP", "allowWithoutTLS": False},
        "noCreate": False,
        "noRecreate": False,
    }
    assert BuilderSpec.model_validate(defaulted["spec"]) == BuilderSpec()
    # A sub-object given partly is completed by the same defaults.
    partial = apply_defaults(root, {"spec": {"cache": {"size": "50Gi"}}})["spec"]["cache"]
    assert partial == {"type": "persistent", "size": "50Gi", "retain": True}


def test_tls_secret_name_rule(spec: dict[str, Any]) -> None:
    tls = prop(spec, "tls")
    (rule,) = [r for r in tls["x-kubernetes-validations"] if r["fieldPath"] == ".secretName"]
    assert "self.mode" in rule["rule"] and "'secret'" in rule["rule"]
    assert "self.secretName" in rule["rule"] and "has(self.secretName)" in rule["rule"]
    # The tls object is defaulted to {}: a rule that read self.mode unguarded would fail.
    assert "!has(self.mode)" in rule["rule"]
    assert rule["fieldPath"] == ".secretName"
    assert "tls.secretName" in rule["message"] and "secret" in rule["message"]


# --- resource, columns, subresource --------------------------------------------------------


def test_resource_names(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "builders.buildkit.dev"
    spec = crd["spec"]
    assert spec["group"] == "buildkit.dev"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("Builder", "builders", "builder")
    assert names["shortNames"] == ["bk"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]


def test_status_subresource(version: dict[str, Any], root: dict[str, Any]) -> None:
    assert version["subresources"] == {"status": {}}
    status = root["properties"]["status"]["properties"]
    for field in (
        "phase",
        "observedGeneration",
        "replicas",
        "readyReplicas",
        "endpoint",
        "clientSecretName",
        "certificateNotAfter",
        "conditions",
    ):
        assert field in status, f"status.{field}"
    assert status["phase"]["enum"] == [
        "Pending",
        "Ready",
        "Degraded",
        "Drifted",
        "Missing",
        "Invalid",
    ]


def test_printer_columns(version: dict[str, Any], root: dict[str, Any]) -> None:
    columns = version["additionalPrinterColumns"]
    assert [c["name"].upper() for c in columns] == ["READY", "PHASE", "ENDPOINT", "AGE"]
    by_name = {c["name"].upper(): c for c in columns}
    assert by_name["AGE"] == {
        "name": by_name["AGE"]["name"],
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    for column in ("READY", "PHASE", "ENDPOINT"):
        path = by_name[column]["jsonPath"]
        assert path.startswith(".status."), column
        # The column shows a status field that exists.
        field = path.removeprefix(".status.")
        assert field in root["properties"]["status"]["properties"], column
    assert by_name["READY"]["jsonPath"] == ".status.ready"
    assert by_name["PHASE"]["jsonPath"] == ".status.phase"
    assert by_name["ENDPOINT"]["jsonPath"] == ".status.endpoint"


def test_status_schema_comes_from_the_status_model(root: dict[str, Any]) -> None:
    status = root["properties"]["status"]["properties"]
    wire = {field.alias or name for name, field in BuilderStatus.model_fields.items()}
    assert set(status) == wire


# --- what the API server refuses at kubectl apply --------------------------------------------

# Where the CRD carries a rule of its own (x-kubernetes-validations), by `kubectl explain` path
# ("[]" an item of a list, "{}" a value of a map, "" the spec itself), and a word its message
# must contain so that the person reading it knows what to fix.
RULES = {
    "": "allowWithoutTLS",
    "image": "whitespace",
    "nodeSelector": "label",
    "podLabels": "label",
    "podAnnotations": "label key",
    "tolerations[]": "operator must be Exists",
    "tolerations[].key": "label key",
    "tolerations[].value": "label value",
    "priorityClassName": "object name",
    "serviceAccountName": "object name",
    "imagePullSecrets[].name": "object name",
    "resources": "must not exceed limits",
    "resources.limits": "not a resource",
    "resources.requests": "not a resource",
    "resources.limits{}": "must not be negative",
    "resources.requests{}": "must not be negative",
    "buildkitd.args[]": "is set by the operator",
    "buildkitd.platforms[]": "platform",
    "cache.size": "256Mi",
    "cache.storageClassName": "object name",
    "tls": "tls.secretName is required",
    "tls.secretName": "object name",
    "tls.extraSANs[]": "DNS name",
    "idleTimeout": "duration",
    "pools[].platform": "platform",
    "pools[].nodeSelector": "label",
    "pools[].resources": "must not exceed limits",
    "pools[].resources.limits": "not a resource",
    "pools[].resources.requests": "not a resource",
    "pools[].resources.limits{}": "must not be negative",
    "pools[].resources.requests{}": "must not be negative",
    "pools[]": "replicas and autoscale are exclusive",
    "autoscale": "must not be more than maxReplicas",
    "autoscale.scaleUpAfter": "duration",
    "autoscale.scaleDownAfter": "duration",
    "pools[].autoscale": "must not be more than maxReplicas",
    "pools[].autoscale.scaleUpAfter": "duration",
    "pools[].autoscale.scaleDownAfter": "duration",
}


def node_at(spec: dict[str, Any], path: str) -> dict[str, Any]:
    node = spec
    for part in filter(None, path.split(".")):
        name = part.rstrip("[]{}")
        node = node["properties"][name]
        if part.endswith("[]"):
            node = node["items"]
        elif part.endswith("{}"):
            node = node["additionalProperties"]
    return node


def all_rules(root: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, rule)
        for path, node in walk(root["properties"]["spec"])
        for rule in node.get("x-kubernetes-validations", [])
    ]


@pytest.mark.parametrize(("path", "word"), sorted(RULES.items()))
def test_the_crd_carries_the_rule(spec: dict[str, Any], path: str, word: str) -> None:
    rules = node_at(spec, path).get("x-kubernetes-validations", [])
    assert rules, f"spec.{path}: no CEL rule"
    texts = [r["message"] + r.get("messageExpression", "") for r in rules]
    assert any(word in text for text in texts), texts


def test_every_rule_is_where_the_table_says(root: dict[str, Any]) -> None:
    """No rule outside the table above (a new one is added to it, and to the integration
    test that runs it against the API server)."""
    paths = {path.removeprefix(".") for path, _ in all_rules(root)}
    assert paths == set(RULES)


def test_every_rule_has_a_message_and_a_sound_field_path(root: dict[str, Any]) -> None:
    for path, rule in all_rules(root):
        assert rule["rule"].strip() and rule["message"].strip(), path
        assert "fieldPath" not in rule or rule["fieldPath"].startswith("."), path
        # A rule on an object reads optional fields only behind has(): the API server
        # evaluates it on partial objects too.
        for field in re.findall(r"self\.([a-zA-Z]+)", rule["rule"]):
            if field in ("matches", "all", "exists", "filter", "contains", "split", "trim",
                         "startsWith", "substring", "lastIndexOf", "indexOf", "map"):  # fmt: skip
                continue
            assert f"has(self.{field})" in rule["rule"], (path, field)


def test_what_cel_reads_is_bounded(spec: dict[str, Any]) -> None:
    """The API server refuses a CRD whose rules it cannot bound in cost: every list, map and
    string a rule walks declares a maximum size."""
    assert prop(spec, "buildkitd.args")["maxItems"] == 128
    assert prop(spec, "buildkitd.args")["items"]["maxLength"] == 4096
    assert prop(spec, "buildkitd.platforms")["maxItems"] == 32
    assert prop(spec, "tls.extraSANs")["maxItems"] == 64
    assert prop(spec, "tls.extraSANs")["items"]["maxLength"] == 253
    assert prop(spec, "tolerations")["maxItems"] == 64
    assert prop(spec, "tolerations")["items"]["properties"]["key"]["maxLength"] == 253 + 1 + 63
    assert prop(spec, "tolerations")["items"]["properties"]["value"]["maxLength"] == 63
    assert prop(spec, "imagePullSecrets")["maxItems"] == 32
    for field in ("nodeSelector", "podLabels", "podAnnotations"):
        assert prop(spec, field)["maxProperties"] == 64, field
    for field in ("resources.limits", "resources.requests"):
        assert prop(spec, field)["maxProperties"] == 32, field
    for field in ("image", "priorityClassName", "serviceAccountName", "tls.secretName"):
        assert "maxLength" in prop(spec, field), field


def test_reserved_flags_rule_covers_every_form(spec: dict[str, Any]) -> None:
    reserved, forbidden = prop(spec, "buildkitd.args")["items"]["x-kubernetes-validations"]
    (pattern,) = re.findall(r'matches\("([^"]*)"\)', reserved["rule"])
    for flag in ("addr", "config", "root", "tlscacert", "tlscert", "tlskey",
                 "oci-worker-no-process-sandbox", "debugaddr"):  # fmt: skip
        for arg in (f"--{flag}", f"-{flag}", f"--{flag}=x", f"-{flag}=x=y"):
            assert re.search(pattern, arg), arg
    for arg in ("--addrx", "--rootless", "x--addr", "--debug", "--config-x=1", "addr"):
        assert not re.search(pattern, arg), arg
    # Flags reaching binaries, paths, sockets or the sandbox (buildkitd v0.34's flag names).
    (pattern,) = re.findall(r'matches\("([^"]*)"\)', forbidden["rule"])
    for flag in ("oci-worker-binary", "oci-worker-proxy-snapshotter-path", "rootless",
                 "oci-cni-binary-dir", "oci-cni-config-path", "cdi-spec-dir", "group",
                 "otel-socket-path", "oci-worker-net", "containerd-worker",
                 "containerd-worker-addr", "containerd-cni-binary-dir"):  # fmt: skip
        for arg in (f"--{flag}", f"-{flag}", f"--{flag}=x", f"-{flag}=x=y"):
            assert re.search(pattern, arg), arg
    for arg in ("--allow-insecure-entitlement=security.insecure", "--debug", "--oci-worker-gc",
                "--oci-max-parallelism=2", "--rootlessx", "x--group"):  # fmt: skip
        assert not re.search(pattern, arg), arg


def test_cache_minimum_rule_reads_256mi(spec: dict[str, Any]) -> None:
    (rule,) = prop(spec, "cache.size")["x-kubernetes-validations"]
    assert "quantity('256Mi')" in rule["rule"] and str(256 * 1024**2) in rule["rule"]
    assert "type(self) == int" in rule["rule"]  # an int-or-string is either


def test_allow_without_tls_is_an_opt_in(spec: dict[str, Any]) -> None:
    field = prop(spec, "service.allowWithoutTLS")
    assert field["type"] == "boolean" and field["default"] is False
    assert "unauthenticated" in field["description"]
    (rule,) = [r for r in spec["x-kubernetes-validations"] if "allowWithoutTLS" in r["message"]]
    assert rule["fieldPath"] == ".service.type"
    for name in ("tls.mode", "service.type", "allowWithoutTLS"):
        assert name in rule["rule"].replace("self.", "") or name in rule["message"], name


def _san_pattern_matches(spec: dict[str, Any]) -> Any:
    (rule,) = prop(spec, "tls.extraSANs")["items"]["x-kubernetes-validations"]
    patterns = [re.compile(p) for p in re.findall(r'matches\("([^"]*)"\)', rule["rule"])]
    assert len(patterns) == 2
    return lambda san: any(p.search(san) for p in patterns)


@pytest.fixture(scope="module")
def san_matches(spec: dict[str, Any]) -> Any:
    """The rule's patterns, compiled once (not once per example: the CRD is generated
    from the model)."""
    return _san_pattern_matches(spec)


def _python_accepts_san(san: str) -> bool:
    try:
        address = ipaddress.ip_address(san)
    except ValueError:
        labels = san.removeprefix("*.").split(".")
        return bool(
            len(san) <= 253
            and re.fullmatch(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", san)
            and all(0 < len(lb) <= 63 and lb[0] != "-" and lb[-1] != "-" for lb in labels)
        )
    return not (isinstance(address, ipaddress.IPv6Address) and address.scope_id)


SAN_ALPHABET = "0123456789abcdefABCDEF:.%*-xz"


@fuzz_settings(1000, derandomize=True)
@example(san="1:2:3:4:5:6:7::")
@example(san="::2:3:4:5:6:7:8")
@example(san="1::3:4:5:6:7:8")
@example(san="1:2:3:4:5::1.2.3.4")
@example(san="::1.2.3.4")
@example(san="1:2:3:4:5:6:1.2.3.4")
@example(san="1:2:3:4:5:6:7:1.2.3.4")
@example(san="1::2::3")
@given(
    san=st.one_of(
        st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).compressed),
        st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).exploded),
        st.integers(0, 2**32 - 1).map(lambda n: f"::ffff:{ipaddress.IPv4Address(n)}"),
        st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
        st.text(SAN_ALPHABET, max_size=45),
        st.lists(st.text("0123456789abcdef", min_size=0, max_size=5), min_size=1, max_size=10).map(
            ":".join
        ),
    )
)
def test_extra_sans_rule_agrees_with_pythons_ipaddress(san_matches: Any, san: str) -> None:
    """The CRD's IPv6 pattern is written by hand; the operator's check uses the ipaddress
    module: both must accept the same strings."""
    assert san_matches(san) == _python_accepts_san(san), san


def test_chart_requires_the_kubernetes_its_objects_need() -> None:
    """securityContext.appArmorProfile is a pod field from Kubernetes 1.30 on (an older API
    server drops it), and CEL's quantity library is offered to new CRD rules from 1.29."""
    chart = yaml.safe_load((REPO / "charts" / "buildkit-operator" / "Chart.yaml").read_text())
    minimum = re.fullmatch(r">=1\.(\d+)\.0-0", chart["kubeVersion"])
    assert minimum, chart["kubeVersion"]
    needs = 1
    crd = crd_yaml()
    if "quantity(" in crd:
        needs = max(needs, 29)
    rootless = Builder.from_manifest(
        {"apiVersion": "buildkit.dev/v1alpha1", "kind": "Builder", "metadata": {"name": "a"},
         "spec": {"rootless": True, "tls": {"mode": "disabled"}}}
    )  # fmt: skip
    if "appArmorProfile" in json.dumps(render_builder(rootless)):
        needs = max(needs, 30)
    assert int(minimum.group(1)) == needs
