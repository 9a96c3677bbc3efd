"""The Builder CRD: crds/ is what the model generates, the schema is structural, and every
field of the API contract is there with its description, default and allowed values."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from buildkit_operator.crd import builder_crd, crd_yaml
from buildkit_operator.model import BuilderSpec, BuilderStatus

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
}

CONTRACT_DEFAULTS = {
    "rootless": True,
    "replicas": 1,
    "cache.type": "persistent",
    "cache.size": "20Gi",
    "cache.retain": True,
    "tls.mode": "auto",
    "service.type": "ClusterIP",
    "noCreate": False,
    "noRecreate": False,
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
        "replicas": 1,
        "buildkitd": {},
        "cache": {"type": "persistent", "size": "20Gi", "retain": True},
        "tls": {"mode": "auto"},
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
    (rule,) = tls["x-kubernetes-validations"]
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
