"""Bad input at scale: malformed Builders of every sort (types, ranges, enums, quantities,
names, unknown fields, limits of size, unicode) refused at `kubectl apply` by the API
server naming the field; and what only the operator can judge (buildkitd.config's TOML)
made phase Invalid naming the field, with no retry loop and nothing torn down.

These add to test_admission.py's table (CEL rules of the model: args, labels, SANs,
resources); together the two hold well over a hundred distinct malformed Builders, each
sent to the API server as a server-side dry run of `kubectl apply`.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from harness import builder, child_writes, events_of, get, patch_spec, wait_phase, wait_until
from harness import writes_in as operator_writes_in
from test_admission import REFUSED as ADMISSION_REFUSED

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

LONG = "x" * 300


def spec(**fields: Any) -> dict[str, Any]:
    return fields


# (id, the Builder's spec or a whole manifest, the field the API server's message names)
SCHEMA_REFUSED: list[tuple[str, dict[str, Any], str]] = [
    # --- types -----------------------------------------------------------------------
    ("replicas-string", spec(replicas="two"), "spec.replicas"),
    ("replicas-float", spec(replicas=1.5), "spec.replicas"),
    ("replicas-bool", spec(replicas=True), "spec.replicas"),
    ("replicas-list", spec(replicas=[1]), "spec.replicas"),
    ("rootless-string", spec(rootless="yes"), "spec.rootless"),
    ("rootless-int", spec(rootless=1), "spec.rootless"),
    ("image-int", spec(image=42), "spec.image"),
    ("image-list", spec(image=["moby/buildkit"]), "spec.image"),
    ("node-selector-list", spec(nodeSelector=["a=b"]), "spec.nodeSelector"),
    ("node-selector-value-int", spec(nodeSelector={"disk": 1}), "spec.nodeSelector.disk"),
    ("tolerations-map", spec(tolerations={"key": "k"}), "spec.tolerations"),
    ("toleration-string", spec(tolerations=["k=v:NoSchedule"]), "spec.tolerations[0]"),
    (
        "toleration-seconds-string",
        spec(tolerations=[{"key": "k", "effect": "NoExecute", "tolerationSeconds": "30"}]),
        "spec.tolerations[0].tolerationSeconds",
    ),
    ("affinity-list", spec(affinity=[]), "spec.affinity"),
    ("spread-map", spec(topologySpreadConstraints={}), "spec.topologySpreadConstraints"),
    ("priority-class-int", spec(priorityClassName=1), "spec.priorityClassName"),
    ("pull-secrets-strings", spec(imagePullSecrets=["regcred"]), "spec.imagePullSecrets[0]"),
    (
        "pull-secret-name-int",
        spec(imagePullSecrets=[{"name": 5}]),
        "spec.imagePullSecrets[0].name",
    ),
    ("pod-label-bool", spec(podLabels={"team": True}), "spec.podLabels.team"),
    ("pod-annotation-int", spec(podAnnotations={"note": 1}), "spec.podAnnotations.note"),
    ("resources-list", spec(resources=[]), "spec.resources"),
    ("limits-list", spec(resources={"limits": ["cpu"]}), "spec.resources.limits"),
    ("buildkitd-string", spec(buildkitd="--debug"), "spec.buildkitd"),
    ("args-string", spec(buildkitd={"args": "--debug"}), "spec.buildkitd.args"),
    ("args-int", spec(buildkitd={"args": [1]}), "spec.buildkitd.args[0]"),
    ("args-nested", spec(buildkitd={"args": [["--debug"]]}), "spec.buildkitd.args[0]"),
    (
        "parallelism-string",
        spec(buildkitd={"maxParallelism": "4"}),
        "spec.buildkitd.maxParallelism",
    ),
    (
        "parallelism-float",
        spec(buildkitd={"maxParallelism": 2.5}),
        "spec.buildkitd.maxParallelism",
    ),
    (
        "mirrors-list",
        spec(buildkitd={"registryMirrors": ["mirror:5000"]}),
        "spec.buildkitd.registryMirrors",
    ),
    (
        "mirrors-string-value",
        spec(buildkitd={"registryMirrors": {"docker.io": "mirror:5000"}}),
        "spec.buildkitd.registryMirrors.docker.io",
    ),
    (
        "mirrors-nested",
        spec(buildkitd={"registryMirrors": {"docker.io": [["m"]]}}),
        "spec.buildkitd.registryMirrors.docker.io[0]",
    ),
    (
        "insecure-string",
        spec(buildkitd={"insecureRegistries": "reg:5000"}),
        "spec.buildkitd.insecureRegistries",
    ),
    (
        "platforms-string",
        spec(buildkitd={"platforms": "linux/amd64"}),
        "spec.buildkitd.platforms",
    ),
    ("config-int", spec(buildkitd={"config": 1}), "spec.buildkitd.config"),
    ("config-map", spec(buildkitd={"config": {"debug": True}}), "spec.buildkitd.config"),
    ("cache-string", spec(cache="20Gi"), "spec.cache"),
    ("cache-retain-string", spec(cache={"retain": "no"}), "spec.cache.retain"),
    ("cache-size-bool", spec(cache={"size": True}), "spec.cache.size"),
    ("cache-size-list", spec(cache={"size": ["20Gi"]}), "spec.cache.size"),
    ("tls-string", spec(tls="auto"), "spec.tls"),
    ("sans-string", spec(tls={"extraSANs": "a.example.com"}), "spec.tls.extraSANs"),
    ("service-type-int", spec(service={"type": 5}), "spec.service.type"),
    (
        "allow-without-tls-string",
        spec(service={"allowWithoutTLS": "true"}),
        "spec.service.allowWithoutTLS",
    ),
    ("no-create-string", spec(noCreate="true"), "spec.noCreate"),
    ("no-recreate-int", spec(noRecreate=0), "spec.noRecreate"),
    # --- ranges and enums --------------------------------------------------------------
    ("replicas-negative", spec(replicas=-1), "spec.replicas"),
    ("replicas-65", spec(replicas=65), "spec.replicas"),
    ("replicas-huge", spec(replicas=2**62), "spec.replicas"),
    ("parallelism-zero", spec(buildkitd={"maxParallelism": 0}), "spec.buildkitd.maxParallelism"),
    (
        "parallelism-negative",
        spec(buildkitd={"maxParallelism": -4}),
        "spec.buildkitd.maxParallelism",
    ),
    ("cache-type", spec(cache={"type": "tmpfs"}), "spec.cache.type"),
    ("cache-type-case", spec(cache={"type": "Persistent"}), "spec.cache.type"),
    ("cache-type-empty", spec(cache={"type": ""}), "spec.cache.type"),
    ("tls-mode", spec(tls={"mode": "on"}), "spec.tls.mode"),
    ("tls-mode-case", spec(tls={"mode": "AUTO"}), "spec.tls.mode"),
    ("service-type", spec(service={"type": "ExternalName"}), "spec.service.type"),
    ("tls-secret-without-name", spec(tls={"mode": "secret"}), "spec.tls.secretName"),
    (
        "tls-secret-empty-name",
        spec(tls={"mode": "secret", "secretName": ""}),
        "spec.tls.secretName",
    ),
    # --- quantities --------------------------------------------------------------------
    ("size-space", spec(cache={"size": "20 Gi"}), "spec.cache.size"),
    ("size-gb", spec(cache={"size": "20GB"}), "spec.cache.size"),
    ("size-unit-only", spec(cache={"size": "Gi"}), "spec.cache.size"),
    ("size-two-dots", spec(cache={"size": "1.5.3Gi"}), "spec.cache.size"),
    ("size-empty", spec(cache={"size": ""}), "spec.cache.size"),
    ("size-lowercase-unit", spec(cache={"size": "20gi"}), "spec.cache.size"),
    ("size-dangling-exponent", spec(cache={"size": "1e"}), "spec.cache.size"),
    ("size-65-characters", spec(cache={"size": "1" * 65}), "spec.cache.size"),
    ("request-word", spec(resources={"requests": {"cpu": "one"}}), "spec.resources.requests"),
    ("limit-space", spec(resources={"limits": {"memory": "2 Gi"}}), "spec.resources.limits"),
    # --- names -------------------------------------------------------------------------
    ("priority-class-254", spec(priorityClassName="p" * 254), "spec.priorityClassName"),
    ("service-account-slash", spec(serviceAccountName="sa/x"), "spec.serviceAccountName"),
    (
        "storage-class-at",
        spec(cache={"storageClassName": "ssd@fast"}),
        "spec.cache.storageClassName",
    ),
    (
        "secret-name-254",
        spec(tls={"mode": "secret", "secretName": "s" * 254}),
        "spec.tls.secretName",
    ),
    ("pull-secret-empty", spec(imagePullSecrets=[{"name": ""}]), "spec.imagePullSecrets[0].name"),
    ("node-selector-empty-key", spec(nodeSelector={"": "x"}), "spec.nodeSelector"),
    ("pod-label-value-64", spec(podLabels={"team": "t" * 64}), "spec.podLabels"),
    ("image-empty", spec(image=""), "spec.image"),
    ("platform-empty", spec(buildkitd={"platforms": [""]}), "spec.buildkitd.platforms[0]"),
    (
        "platform-too-many-parts",
        spec(buildkitd={"platforms": ["linux/arm/v7/x"]}),
        "spec.buildkitd.platforms[0]",
    ),
    ("san-empty", spec(tls={"extraSANs": [""]}), "spec.tls.extraSANs[0]"),
    ("san-double-wildcard", spec(tls={"extraSANs": ["*.*.example.com"]}), "spec.tls.extraSANs[0]"),
    (
        "args-tlscert-equals",
        spec(buildkitd={"args": ["--tlscert=/x.pem"]}),
        "spec.buildkitd.args[0]",
    ),
    (
        "args-root-later",
        spec(buildkitd={"args": ["--debug", "--trace", "--root=/x"]}),
        "spec.buildkitd.args[2]",
    ),
    (
        "requests-above-limits-mixed-units",
        spec(resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}),
        "spec.resources",
    ),
    ("resource-uppercase", spec(resources={"limits": {"CPU": 1}}), "spec.resources.limits"),
    (
        "toleration-key-slash-end",
        spec(tolerations=[{"key": "example.com/", "operator": "Exists"}]),
        "spec.tolerations[0].key",
    ),
    # --- unknown fields (kubectl's strict field validation) -----------------------------
    ("unknown-replica", spec(replica=2), "spec.replica"),
    ("unknown-nested", spec(buildkitd={"maxparallelism": 2}), "spec.buildkitd.maxparallelism"),
    ("unknown-cache", spec(cache={"sizes": "20Gi"}), "spec.cache.sizes"),
    ("unknown-tls", spec(tls={"secret": "x"}), "spec.tls.secret"),
    # --- size limits: huge values --------------------------------------------------------
    ("args-129", spec(buildkitd={"args": ["--debug"] * 129}), "spec.buildkitd.args"),
    ("arg-4097", spec(buildkitd={"args": ["--x=" + "y" * 4093]}), "spec.buildkitd.args[0]"),
    ("image-1025", spec(image="r/" + "i" * 1023), "spec.image"),
    (
        "node-selector-65",
        spec(nodeSelector={f"k{i}": "v" for i in range(65)}),
        "spec.nodeSelector",
    ),
    (
        "pod-annotations-65",
        spec(podAnnotations={f"a{i}": "v" for i in range(65)}),
        "spec.podAnnotations",
    ),
    ("tolerations-65", spec(tolerations=[{"operator": "Exists"}] * 65), "spec.tolerations"),
    (
        "pull-secrets-33",
        spec(imagePullSecrets=[{"name": f"s{i}"} for i in range(33)]),
        "spec.imagePullSecrets",
    ),
    (
        "platforms-33",
        spec(buildkitd={"platforms": ["linux/amd64"] * 33}),
        "spec.buildkitd.platforms",
    ),
    (
        "sans-65",
        spec(tls={"extraSANs": [f"h{i}.example.com" for i in range(65)]}),
        "spec.tls.extraSANs",
    ),
    (
        "limits-33",
        spec(resources={"limits": {f"example.com/r{i}": 1 for i in range(33)}}),
        "spec.resources.limits",
    ),
    # --- unicode -----------------------------------------------------------------------
    ("image-nbsp", spec(image="moby/buildkit\u00a0"), "spec.image"),
    ("node-selector-key-umlaut", spec(nodeSelector={"zöne": "a"}), "spec.nodeSelector"),
    ("node-selector-value-umlaut", spec(nodeSelector={"zone": "ü"}), "spec.nodeSelector"),
    ("pod-label-key-cjk", spec(podLabels={"团队": "a"}), "spec.podLabels"),
    (
        "storage-class-umlaut",
        spec(cache={"storageClassName": "fäst"}),
        "spec.cache.storageClassName",
    ),
    ("priority-class-zero-width", spec(priorityClassName="high\u200b"), "spec.priorityClassName"),
    ("san-idn", spec(tls={"extraSANs": ["bücher.example"]}), "spec.tls.extraSANs[0]"),
    (
        "service-account-fullwidth",
        spec(serviceAccountName="\uff53\uff41"),
        "spec.serviceAccountName",
    ),
    (
        "secret-name-check-mark",
        spec(tls={"mode": "secret", "secretName": "sec✓"}),
        "spec.tls.secretName",
    ),
    (
        "platform-cyrillic",
        spec(buildkitd={"platforms": ["linu\u0445/amd64"]}),
        "spec.buildkitd.platforms[0]",
    ),
]

# Whole manifests: the Builder's own name, as Kubernetes judges object names.
NAME_REFUSED: list[tuple[str, str, str]] = [
    ("name-uppercase", "Team-A", "metadata.name"),
    ("name-underscore", "team_a", "metadata.name"),
    ("name-leading-dash", "-team", "metadata.name"),
    ("name-254", "b" * 254, "metadata.name"),
    ("name-umlaut", "bäcker", "metadata.name"),
    ("name-space", "team a", "metadata.name"),
]

# What only the operator can judge: the TOML of buildkitd.config.
OPERATOR_JUDGED: list[tuple[str, str]] = [
    ("unclosed-table", "[worker.oci\nmax-parallelism = 2\n"),
    ("bare-value", "debug = yes\n"),
    ("duplicate-key", "debug = true\ndebug = false\n"),
    ("duplicate-table", "[worker.oci]\nmax-parallelism = 1\n[worker.oci]\nenabled = true\n"),
    ("nul-character", 'debug = "\x00"\n'),
    ("unicode-bare-key", "[worker.oci]\nmäx = 1\n"),
    ("deep-array", "a = " + "[" * 5000 + "]" * 5000 + "\n"),
    ("deep-inline-table", "a = " + "{b = " * 40 + "1" + "}" * 40 + "\n"),
]


def test_at_least_a_hundred_distinct_malformed_builders() -> None:
    ids = (
        [case[0] for case in SCHEMA_REFUSED]
        + [case[0] for case in NAME_REFUSED]
        + [case[0] for case in OPERATOR_JUDGED]
        + [case[0] for case in ADMISSION_REFUSED]
    )
    assert len(ids) == len(set(ids)), "a case is there twice"
    assert len(ids) >= 100, len(ids)


@pytest.fixture(scope="module")
def crd_installed(kubectl: Any) -> None:
    from test_admission import CRD_FILE

    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl.wait_established("builders.buildkit.dev")


@pytest.fixture(scope="module")
def dry_ns(cluster: Any) -> Iterator[str]:
    name = f"malformed-{uuid.uuid4().hex[:6]}"
    cluster.api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        exist_ok=False,
    )
    yield name
    cluster.api.delete(f"/api/v1/namespaces/{name}")


def _refused(kubectl: Any, doc: dict[str, Any], field: str) -> None:
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))
    assert result.returncode != 0, f"the API server accepted it: {result.stdout}"
    assert field in result.stderr, f"{field} not named: {result.stderr[-1500:]}"
    for failure in ("rule evaluation error", "compilation failed", "cost", "panic"):
        assert failure not in result.stderr, result.stderr[-1500:]


@pytest.mark.parametrize(
    ("body", "field"), [pytest.param(s, f, id=i) for i, s, f in SCHEMA_REFUSED]
)
def test_malformed_spec_is_refused_at_apply(
    crd_installed: None, kubectl: Any, dry_ns: str, body: dict[str, Any], field: str
) -> None:
    _refused(kubectl, builder("malformed", dry_ns, **copy.deepcopy(body)), field)


@pytest.mark.parametrize(("name", "field"), [pytest.param(n, f, id=i) for i, n, f in NAME_REFUSED])
def test_malformed_name_is_refused_at_apply(
    crd_installed: None, kubectl: Any, dry_ns: str, name: str, field: str
) -> None:
    _refused(kubectl, builder(name, dry_ns), field)


# --- what only the operator can judge -----------------------------------------------------


EPHEMERAL = {"type": "ephemeral"}


def test_invalid_config_is_invalid_naming_the_field_without_a_loop(
    k: Kubectl, cluster: Any, namespace: str
) -> None:
    """Each Builder with a config only the operator can judge: accepted at apply, phase
    Invalid naming spec.buildkitd.config, nothing created, and then no write and no Event
    while nothing changes (no retry loop); the operator keeps running."""
    for case, config in OPERATOR_JUDGED:
        k.apply(builder(case, namespace, cache=EPHEMERAL, buildkitd={"config": config}))
    for case, _ in OPERATOR_JUDGED:
        obj = wait_phase(k, case, namespace, "Invalid")
        assert "spec.buildkitd.config" in obj["status"]["message"], obj["status"]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    deployments = k.json("get", "deployments", "-n", namespace)["items"]
    assert deployments == [], "a Builder refused as Invalid got daemons"
    events = {case: len(events_of(k, namespace, case)) for case, _ in OPERATOR_JUDGED}
    since = time.time()
    time.sleep(12)  # longer than the first retry backoffs (2 s, 4 s, 8 s)
    assert operator_writes_in(cluster, namespace, since) == []
    for case, _ in OPERATOR_JUDGED:
        assert len(events_of(k, namespace, case)) == events[case], f"{case}: Events in a loop"


@pytest.mark.parametrize("case", ["deep-array", "duplicate-table", "nul-character"])
def test_running_builder_edited_invalid_keeps_running(
    k: Kubectl, cluster: Any, namespace: str, case: str
) -> None:
    config = dict(OPERATOR_JUDGED)[case]
    k.apply(builder("runs", namespace, cache=EPHEMERAL))
    wait_phase(k, "runs", namespace, "Ready")
    before = get(k, "deployment", "runs-0", namespace)
    edited = time.time()
    patch_spec(k, "runs", namespace, {"buildkitd": {"config": config}})
    obj = wait_phase(k, "runs", namespace, "Invalid")
    assert "spec.buildkitd.config" in obj["status"]["message"]
    since = time.time()
    time.sleep(6)
    after = get(k, "deployment", "runs-0", namespace)
    # The daemon that ran goes on running, untouched (its spec and its pods): from the
    # audit log, no write to anything that runs since the edit, only the Builder's status
    # and its Event; and none at all once Invalid.
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["status"].get("readyReplicas") == 1
    assert child_writes(cluster, namespace, edited) == []
    assert operator_writes_in(cluster, namespace, since) == []
    # And a valid edit takes it back to Ready.
    patch_spec(k, "runs", namespace, {"buildkitd": {"config": "debug = true\n"}})
    wait_until(
        "Ready again",
        lambda: get(k, "builder", "runs", namespace)["status"]["phase"] == "Ready",
        90,
    )
