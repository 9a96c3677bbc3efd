"""Rendering, field by field of the API contract: what each spec field does to the objects
the operator creates. Pure: no cluster."""

from __future__ import annotations

import base64
import functools
import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509

from buildkit_operator.api import DEFAULT_IMAGE_ROOTFUL, DEFAULT_IMAGE_ROOTLESS, Builder
from buildkit_operator.api.names import ChildNames
from buildkit_operator.pki import TLSBundle, ensure_tls
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UID = "7d3c1f0e-0000-4000-8000-000000000001"
ROOTLESS_CACHE = "/home/user/.local/share/buildkit"
ROOTFUL_CACHE = "/var/lib/buildkit"
CHECKSUM_CONFIG = "buildkit.dev/config-hash"
CHECKSUM_TLS = "buildkit.dev/tls-hash"
MANAGED_BY = "app.kubernetes.io/managed-by"


def make(
    spec: dict[str, Any] | None = None,
    *,
    name: str = "team-a",
    namespace: str = "ci",
    uid: str | None = UID,
) -> Builder:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": metadata,
            "spec": spec or {},
        }
    )


@functools.cache
def bundle_for(name: str, namespace: str = "ci", at: datetime = NOW) -> TLSBundle:
    sans = server_sans(make(name=name, namespace=namespace))
    return ensure_tls({}, name=name, server_sans=sans, now=at)


def render(builder: Builder, tls: TLSBundle | None = None, **kw: Any) -> list[dict[str, Any]]:
    if tls is None and builder.spec.tls.mode == "auto":
        tls = bundle_for(builder.name, builder.namespace)
    return render_builder(builder, tls, **kw)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    if kind == "Service":  # the one clients reach; the headless one has clusterIP None
        found = [o for o in found if o["spec"].get("clusterIP") != "None"]
    (first,) = found
    return first


def deployments(spec: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return of_kind(render(make(spec, **kw)), "Deployment")


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod(deployment)["containers"]
    return dict(only)


def first_pod(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return pod(deployments(spec)[0])


def first_container(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return container(deployments(spec)[0])


def mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in c["volumeMounts"]}


def volumes(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in p["volumes"]}


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values of ``flag`` in ``args`` (``--flag value`` or ``--flag=value``)."""
    values = []
    for index, arg in enumerate(args):
        if arg == flag:
            values.append(args[index + 1])
        elif arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
    return values


def toml_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(one(objects, "ConfigMap")["data"]["buildkitd.toml"])


def template_annotations(deployment: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


# --- rootless -----------------------------------------------------------------------------


def test_rootless_is_the_default_and_unprivileged() -> None:
    c = first_container()
    security = c["securityContext"]
    assert security["runAsUser"] == 1000 and security["runAsGroup"] == 1000
    assert security["seccompProfile"] == {"type": "Unconfined"}
    assert security["appArmorProfile"] == {"type": "Unconfined"}
    assert not security.get("privileged")
    assert "--oci-worker-no-process-sandbox" in c["args"]
    assert c["image"] == DEFAULT_IMAGE_ROOTLESS
    assert mounts(c)["cache"] == ROOTLESS_CACHE
    assert flag_values(c["args"], "--root") == [ROOTLESS_CACHE]
    # The cache volume is writable by uid 1000.
    assert first_pod()["securityContext"]["fsGroup"] == 1000


def test_rootless_drops_every_capability_but_the_id_maps() -> None:
    """rootlesskit's newuidmap/newgidmap gain CAP_SETUID/CAP_SETGID at exec (file
    capabilities, or setuid root), which needs both in the bounding set and no_new_privs
    off; nothing else in the container needs a capability of the node's.
    allowPrivilegeEscalation stays unset: false sets no_new_privs, and true is what the
    chart's Deployment policy refuses in a namespace that did not opt in."""
    security = first_container()["securityContext"]
    capabilities = security["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    assert sorted(capabilities["add"]) == ["SETGID", "SETUID"]
    assert "allowPrivilegeEscalation" not in security


def test_rootful_is_privileged_with_the_root_layout() -> None:
    c = first_container({"rootless": False})
    assert c["securityContext"]["privileged"] is True
    assert "runAsUser" not in c["securityContext"]
    assert "--oci-worker-no-process-sandbox" not in c["args"]
    assert c["image"] == DEFAULT_IMAGE_ROOTFUL
    assert mounts(c)["cache"] == ROOTFUL_CACHE
    assert flag_values(c["args"], "--root") == [ROOTFUL_CACHE]


def test_default_images_are_pinned_moby_buildkit() -> None:
    assert DEFAULT_IMAGE_ROOTFUL.rsplit(":", 1)[0].endswith("moby/buildkit")
    version = DEFAULT_IMAGE_ROOTFUL.rsplit(":", 1)[1]
    assert version.startswith("v") and version != "latest"
    assert DEFAULT_IMAGE_ROOTLESS.removesuffix("-rootless") == DEFAULT_IMAGE_ROOTFUL


@pytest.mark.parametrize("rootless", [True, False])
def test_custom_image_in_either_mode(rootless: bool) -> None:
    image = "registry.internal/buildkit:v0.34.2-custom"
    assert first_container({"rootless": rootless, "image": image})["image"] == image


# --- replicas and cache -------------------------------------------------------------------


def test_replicas_is_the_number_of_daemons_each_with_its_own_claim() -> None:
    objects = render(make({"replicas": 3}))
    deps = of_kind(objects, "Deployment")
    claims = of_kind(objects, "PersistentVolumeClaim")
    assert len(deps) == 3 and len(claims) == 3
    assert len({d["metadata"]["name"] for d in deps}) == 3
    used = []
    for dep in deps:
        # One pod per Deployment, never two at once on a cache volume.
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"] == {"type": "Recreate"}
        used.append(volumes(pod(dep))["cache"]["persistentVolumeClaim"]["claimName"])
    assert len(set(used)) == 3, f"daemons share a cache claim: {used}"
    assert set(used) == {c["metadata"]["name"] for c in claims}
    for claim in claims:
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_each_deployment_selects_only_its_own_pod() -> None:
    deps = deployments({"replicas": 2})
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deps]
    assert selectors[0] != selectors[1]
    for dep, selector in zip(deps, selectors, strict=True):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    for dep, other in ((deps[0], selectors[1]), (deps[1], selectors[0])):
        assert not other.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_zero_replicas_renders_no_daemons() -> None:
    objects = render(make({"replicas": 0}))
    assert not of_kind(objects, "Deployment") and not of_kind(objects, "PersistentVolumeClaim")
    assert of_kind(objects, "Service") and of_kind(objects, "ConfigMap")


def test_ephemeral_cache_is_an_empty_dir_with_the_size_as_limit() -> None:
    objects = render(make({"replicas": 2, "cache": {"type": "ephemeral", "size": "5Gi"}}))
    assert not of_kind(objects, "PersistentVolumeClaim")
    for dep in of_kind(objects, "Deployment"):
        cache = volumes(pod(dep))["cache"]
        assert cache == {"name": "cache", "emptyDir": {"sizeLimit": "5Gi"}}


def test_cache_size_and_storage_class_on_the_claims() -> None:
    spec = {"replicas": 2, "cache": {"size": "50Gi", "storageClassName": "fast-ssd"}}
    for claim in of_kind(render(make(spec)), "PersistentVolumeClaim"):
        assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
        assert claim["spec"]["storageClassName"] == "fast-ssd"


def test_no_storage_class_means_the_cluster_default() -> None:
    (claim,) = of_kind(render(make()), "PersistentVolumeClaim")
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_retained_claims_have_no_owner() -> None:
    claims = of_kind(render(make({"replicas": 2})), "PersistentVolumeClaim")
    assert claims and all("ownerReferences" not in c["metadata"] for c in claims)
    assert all(c["metadata"]["labels"][MANAGED_BY] == "buildkit-operator" for c in claims)


def test_unretained_claims_are_owned_by_the_builder() -> None:
    claims = of_kind(render(make({"cache": {"retain": False}})), "PersistentVolumeClaim")
    (claim,) = claims
    (ref,) = claim["metadata"]["ownerReferences"]
    assert ref["uid"] == UID and ref["kind"] == "Builder" and ref["name"] == "team-a"


# --- pod settings copied from the spec -----------------------------------------------------


def test_pod_settings_are_copied_to_every_builder_pod() -> None:
    tolerations = [
        {"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 30},
    ]  # fmt: skip
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ci"]}]}
                ]
            }
        }
    }
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "team-a"}},
        }
    ]
    spec = {
        "replicas": 2,
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": tolerations,
        "affinity": affinity,
        "topologySpreadConstraints": spread,
        "priorityClassName": "ci-high",
        "serviceAccountName": "buildkitd",
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "a"},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
    }
    deps = deployments(spec)
    assert len(deps) == 2
    for dep in deps:
        p = pod(dep)
        assert p["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
        assert p["tolerations"] == tolerations
        assert p["affinity"] == affinity
        assert p["topologySpreadConstraints"] == spread
        assert p["priorityClassName"] == "ci-high"
        assert p["serviceAccountName"] == "buildkitd"
        assert p["imagePullSecrets"] == [{"name": "regcred"}]
        assert template_annotations(dep)["example.com/team"] == "a"
        assert container(dep)["resources"] == {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "8Gi"},
        }


def test_unset_pod_settings_are_left_out() -> None:
    p = first_pod()
    for key in (
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "priorityClassName",
        "serviceAccountName",
        "imagePullSecrets",
    ):
        assert key not in p, key
    assert "resources" not in first_container()


def test_pod_labels_are_added_but_ours_win() -> None:
    dep = deployments(
        {"podLabels": {"team": "a", "app.kubernetes.io/name": "mine", MANAGED_BY: "me"}}
    )[0]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "a"
    assert labels["app.kubernetes.io/name"] == "buildkitd"
    assert labels[MANAGED_BY] == "buildkit-operator"
    # The Service still finds the pod.
    selector = one(render(make()), "Service")["spec"]["selector"]
    assert selector.items() <= labels.items()


def test_pod_annotations_cannot_replace_the_checksums() -> None:
    dep = deployments({"podAnnotations": {CHECKSUM_CONFIG: "forged"}})[0]
    assert template_annotations(dep)[CHECKSUM_CONFIG] != "forged"


# --- buildkitd flags ----------------------------------------------------------------------


def test_args_are_appended_after_the_operators_flags() -> None:
    extra = ["--debug", "--oci-worker-snapshotter=native"]
    args = first_container({"buildkitd": {"args": extra}})["args"]
    assert args[-2:] == extra
    assert args.index("--addr") < args.index("--debug")


def test_listens_on_tcp_1234_and_the_local_socket() -> None:
    c = first_container()
    addresses = flag_values(c["args"], "--addr")
    assert "tcp://0.0.0.0:1234" in addresses
    assert any(a.startswith("unix://") for a in addresses)
    assert {"name": "buildkitd", "containerPort": 1234, "protocol": "TCP"} in c["ports"]


@pytest.mark.parametrize("rootless", [True, False])
def test_probes_ask_buildctl_for_workers_on_the_unix_socket(rootless: bool) -> None:
    c = first_container({"rootless": rootless})
    (socket,) = [a for a in flag_values(c["args"], "--addr") if a.startswith("unix://")]
    for probe in ("readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"]
        # Ended by `timeout` before the kubelet gives up on it: no probe process outlives
        # its probe, even when the daemon never answers.
        assert command[:3] == ["timeout", "-s", "KILL"], probe
        assert int(command[3]) < c[probe]["timeoutSeconds"], probe
        assert command[4:] == ["buildctl", "--addr", socket, "debug", "workers"], probe


def test_config_map_is_mounted_where_config_points() -> None:
    objects = render(make())
    config_map = one(objects, "ConfigMap")
    dep = one(objects, "Deployment")
    c, p = container(dep), pod(dep)
    assert volumes(p)["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    (config_path,) = flag_values(c["args"], "--config")
    assert config_path == f"{mounts(c)['config']}/buildkitd.toml"
    assert "buildkitd.toml" in config_map["data"]


# --- buildkitd.toml -----------------------------------------------------------------------


def test_toml_from_the_buildkitd_fields() -> None:
    spec = {
        "buildkitd": {
            "maxParallelism": 4,
            "registryMirrors": {"docker.io": ["mirror.internal:5000", "mirror2.internal"]},
            "insecureRegistries": ["registry.internal:5000"],
            "platforms": ["linux/amd64", "linux/arm64"],
        }
    }
    config = toml_of(render(make(spec)))
    oci = config["worker"]["oci"]
    assert oci["max-parallelism"] == 4
    assert oci["platforms"] == ["linux/amd64", "linux/arm64"]
    registry = config["registry"]
    assert registry["docker.io"]["mirrors"] == ["mirror.internal:5000", "mirror2.internal"]
    assert registry["registry.internal:5000"]["http"] is True
    assert registry["registry.internal:5000"]["insecure"] is True


def test_unset_fields_leave_buildkit_defaults() -> None:
    config = toml_of(render(make()))
    assert "max-parallelism" not in config["worker"]["oci"]
    assert "platforms" not in config["worker"]["oci"]
    assert "registry" not in config


def _size(value: Any) -> int:
    return int(value)


@pytest.mark.parametrize(
    ("size", "size_bytes"),
    [("20Gi", 20 * 2**30), ("50Gi", 50 * 2**30), ("1.5T", 1_500 * 10**9), ("750Mi", 750 * 2**20)],
)
def test_gc_limits_keep_the_cache_inside_its_volume(size: str, size_bytes: int) -> None:
    for cache_type in ("persistent", "ephemeral"):
        oci = toml_of(render(make({"cache": {"size": size, "type": cache_type}})))["worker"]["oci"]
        assert oci["gc"] is True
        reserved, max_used = _size(oci["reservedSpace"]), _size(oci["maxUsedSpace"])
        min_free = _size(oci["minFreeSpace"])
        assert 0 < reserved < max_used < size_bytes
        assert 0 < min_free < size_bytes
        # What GC lets the cache hold plus what it keeps free fits in the volume.
        assert max_used + min_free <= size_bytes


def test_gc_limits_follow_the_size() -> None:
    small = toml_of(render(make({"cache": {"size": "10Gi"}})))["worker"]["oci"]
    large = toml_of(render(make({"cache": {"size": "100Gi"}})))["worker"]["oci"]
    assert _size(large["maxUsedSpace"]) == 10 * _size(small["maxUsedSpace"])


RAW = """
debug = true

[log]
format = "json"

[worker.oci]
max-parallelism = 16
gc = false
labels = { "example.com/pool" = "ci" }

[[worker.oci.gcpolicy]]
all = true
keepDuration = "48h"

[registry."docker.io"]
mirrors = ["raw-mirror:5000"]

[registry."ghcr.io"]
mirrors = ["ghcr-mirror:5000"]
"""


def test_raw_config_is_merged_under_the_spec() -> None:
    spec = {
        "buildkitd": {
            "config": RAW,
            "maxParallelism": 2,
            "registryMirrors": {"docker.io": ["spec-mirror:5000"]},
        }
    }
    config = toml_of(render(make(spec)))
    oci = config["worker"]["oci"]
    # The spec wins where both set a key.
    assert oci["max-parallelism"] == 2
    assert oci["gc"] is True
    assert config["registry"]["docker.io"]["mirrors"] == ["spec-mirror:5000"]
    # What only the raw config sets is kept, at every depth.
    assert config["debug"] is True
    assert config["log"] == {"format": "json"}
    assert oci["labels"] == {"example.com/pool": "ci"}
    assert oci["gcpolicy"] == [{"all": True, "keepDuration": "48h"}]
    assert config["registry"]["ghcr.io"] == {"mirrors": ["ghcr-mirror:5000"]}


@pytest.mark.parametrize(
    "raw",
    [
        'worker = { oci = { labels = { pool = "ci" } } }\n',
        'worker.oci.labels.pool = "ci"\n',
        '[worker]\noci.labels.pool = "ci"\n',
    ],
    ids=["inline-table", "dotted-keys", "dotted-in-table"],
)
def test_raw_tables_however_spelled_are_merged(raw: str) -> None:
    config = toml_of(render(make({"buildkitd": {"config": raw, "maxParallelism": 3}})))
    assert config["worker"]["oci"]["labels"] == {"pool": "ci"}
    assert config["worker"]["oci"]["max-parallelism"] == 3


def test_raw_registry_inline_table_keeps_registries_the_spec_does_not_name() -> None:
    raw = 'registry = { "ghcr.io" = { mirrors = ["g:5000"] } }\n'
    spec = {"buildkitd": {"config": raw, "insecureRegistries": ["local:5000"]}}
    registry = toml_of(render(make(spec)))["registry"]
    assert registry["ghcr.io"] == {"mirrors": ["g:5000"]}
    assert registry["local:5000"] == {"http": True, "insecure": True}


# --- TLS ----------------------------------------------------------------------------------


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_tls_auto_renders_three_secrets_and_mounts_the_server_one() -> None:
    builder = make()
    bundle = bundle_for("team-a")
    objects = render(builder, bundle)
    names = ChildNames("team-a")
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    assert set(secrets) == {"team-a-ca", "team-a-server-tls", "team-a-client-tls"}
    assert set(secrets) == {names.ca_secret, names.server_secret, names.client_secret}
    server = _decoded(secrets["team-a-server-tls"])
    client = _decoded(secrets["team-a-client-tls"])
    ca = _decoded(secrets["team-a-ca"])
    assert set(server) == set(client) == {"ca.pem", "cert.pem", "key.pem"}
    assert set(ca) >= {"ca.pem"}
    assert server["cert.pem"] == bundle.server.cert_pem
    assert client["cert.pem"] == bundle.client.cert_pem
    assert client["ca.pem"] == ca["ca.pem"] == bundle.ca.cert_pem
    # buildkitd's --tlscacert: the CAs it accepts client certificates from (the client CA,
    # and the CA until a revocation dates after it).
    assert server["ca.pem"] == ca["client-ca.pem"] + bundle.ca.cert_pem

    c, p = first_container(), first_pod()
    assert mounts(c)["certs"] == "/certs"
    certs = volumes(p)["certs"]["secret"]
    # Only the server's material reaches the pod: never the CA key or the client key.
    assert certs["secretName"] == "team-a-server-tls"
    assert flag_values(c["args"], "--tlscacert") == ["/certs/ca.pem"]
    assert flag_values(c["args"], "--tlscert") == ["/certs/cert.pem"]
    assert flag_values(c["args"], "--tlskey") == ["/certs/key.pem"]
    assert {i["path"] for i in certs["items"]} == {"ca.pem", "cert.pem", "key.pem"}


def test_tls_auto_needs_tls_material() -> None:
    with pytest.raises(ValueError, match="auto"):
        render_builder(make(), None)


def test_server_certificate_covers_the_endpoint_and_extra_sans() -> None:
    builder = make({"tls": {"extraSANs": ["buildkit.example.com", "10.1.2.3"]}})
    bundle = ensure_tls({}, name="team-a", server_sans=server_sans(builder), now=NOW)
    cert = x509.load_pem_x509_certificate(bundle.server.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    host = ChildNames("team-a").endpoint("ci").removeprefix("tcp://").rsplit(":", 1)[0]
    assert host in dns
    assert "buildkit.example.com" in dns and "10.1.2.3" in ips


def test_tls_secret_mounts_the_users_secret_and_renders_no_secrets() -> None:
    objects = render(make({"tls": {"mode": "secret", "secretName": "my-cert"}}))
    assert not of_kind(objects, "Secret")
    dep = one(objects, "Deployment")
    assert volumes(pod(dep))["certs"]["secret"]["secretName"] == "my-cert"
    c = container(dep)
    assert mounts(c)["certs"] == "/certs"
    assert flag_values(c["args"], "--tlscert") == ["/certs/cert.pem"]
    assert flag_values(c["args"], "--tlskey") == ["/certs/key.pem"]
    assert flag_values(c["args"], "--tlscacert") == ["/certs/ca.pem"]


def test_tls_disabled_has_no_tls_at_all() -> None:
    objects = render(make({"tls": {"mode": "disabled"}}))
    assert not of_kind(objects, "Secret")
    dep = one(objects, "Deployment")
    c = container(dep)
    assert not any(arg.startswith("--tls") for arg in c["args"])
    assert "certs" not in mounts(c) and "certs" not in volumes(pod(dep))
    assert CHECKSUM_TLS not in template_annotations(dep)


# --- Service and endpoint -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_service_type_and_port(kind: str) -> None:
    objects = render(make({"service": {"type": kind}, "replicas": 2}))
    svc = one(objects, "Service")
    assert svc["spec"]["type"] == kind
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 1234 and port["protocol"] == "TCP"
    # The target port is the container's port, and every daemon is behind the Service.
    for dep in of_kind(objects, "Deployment"):
        names = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
        target = port["targetPort"]
        assert names.get(target, target) == 1234
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()


def test_service_selects_no_other_builders_pods() -> None:
    ours = one(render(make(name="team-a")), "Service")["spec"]["selector"]
    theirs = one(render(make(name="team-b")), "Deployment")["spec"]["template"]["metadata"]
    assert not ours.items() <= theirs["labels"].items()


def test_endpoint_is_the_service_in_its_namespace() -> None:
    svc = one(render(make()), "Service")["metadata"]
    assert ChildNames("team-a").endpoint("ci") == f"tcp://{svc['name']}.ci.svc:1234"
    assert ChildNames("team-a").endpoint("ci") == "tcp://team-a.ci.svc:1234"


# --- every child ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"replicas": 2, "cache": {"retain": False}},
        {"replicas": 2, "tls": {"mode": "secret", "secretName": "x"}},
        {"cache": {"type": "ephemeral"}, "tls": {"mode": "disabled"}},
    ],
)
def test_every_child_is_managed_and_owned(spec: dict[str, Any]) -> None:
    builder = make(spec)
    objects = render(builder)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    for obj in objects:
        meta = obj["metadata"]
        where = f"{obj['kind']} {meta['name']}"
        assert meta["namespace"] == "ci", where
        assert meta["labels"][MANAGED_BY] == "buildkit-operator", where
        if obj["kind"] == "PersistentVolumeClaim" and builder.spec.cache.retain:
            assert "ownerReferences" not in meta, where
            continue
        (ref,) = meta["ownerReferences"]
        assert ref == {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "name": "team-a",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }, where


def test_rendered_offline_without_a_uid_there_is_no_owner() -> None:
    for obj in render(make(uid=None)):
        assert "ownerReferences" not in obj["metadata"], obj["kind"]


def test_all_children_of_tls_auto() -> None:
    objects = render(make({"replicas": 2}))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        [
            ("ConfigMap", "team-a-config"),
            ("Secret", "team-a-ca"),
            ("Secret", "team-a-server-tls"),
            ("Secret", "team-a-client-tls"),
            ("PersistentVolumeClaim", "team-a-cache-0"),
            ("PersistentVolumeClaim", "team-a-cache-1"),
            ("Deployment", "team-a-0"),
            ("Deployment", "team-a-1"),
            ("Service", "team-a"),
            ("Service", "team-a-f3ec5513"),  # headless: the daemons' own names
            ("PodDisruptionBudget", "team-a"),
        ]
    )


# --- checksums that roll the pods ---------------------------------------------------------


def _checksums(spec: dict[str, Any], tls: TLSBundle | None = None) -> dict[str, str]:
    dep = of_kind(render(make(spec), tls), "Deployment")[0]
    annotations = template_annotations(dep)
    return {k: annotations[k] for k in (CHECKSUM_CONFIG, CHECKSUM_TLS) if k in annotations}


def test_pod_template_carries_config_and_tls_checksums() -> None:
    sums = _checksums({})
    assert sums.keys() == {CHECKSUM_CONFIG, CHECKSUM_TLS} and all(sums.values())


@pytest.mark.parametrize(
    "change",
    [
        {"buildkitd": {"maxParallelism": 8}},
        {"buildkitd": {"registryMirrors": {"docker.io": ["m:5000"]}}},
        {"buildkitd": {"config": "debug = true\n"}},
        {"cache": {"size": "40Gi"}},
    ],
)
def test_config_change_changes_the_config_checksum(change: dict[str, Any]) -> None:
    before, after = _checksums({}), _checksums(change)
    assert after[CHECKSUM_CONFIG] != before[CHECKSUM_CONFIG]
    assert after[CHECKSUM_TLS] == before[CHECKSUM_TLS]


def test_new_certificates_change_the_tls_checksum() -> None:
    renewed = bundle_for("team-a", at=datetime(2027, 6, 1, tzinfo=UTC))
    assert renewed.server.cert_pem != bundle_for("team-a").server.cert_pem
    before, after = _checksums({}), _checksums({}, renewed)
    assert after[CHECKSUM_TLS] != before[CHECKSUM_TLS]
    assert after[CHECKSUM_CONFIG] == before[CHECKSUM_CONFIG]


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 3},
        {"nodeSelector": {"pool": "ci"}},
        {"service": {"type": "NodePort"}},
        {"cache": {"retain": False}},
    ],
)
def test_unrelated_changes_keep_both_checksums(change: dict[str, Any]) -> None:
    assert _checksums(change) == _checksums({})


def test_replacing_a_users_secret_changes_the_tls_checksum() -> None:
    builder = make({"tls": {"mode": "secret", "secretName": "my-cert"}})
    first = one(render(builder, external_tls_hash="aaaa"), "Deployment")
    second = one(render(builder, external_tls_hash="bbbb"), "Deployment")
    assert template_annotations(first)[CHECKSUM_TLS] == "aaaa"
    assert template_annotations(second)[CHECKSUM_TLS] == "bbbb"


def test_the_shared_client_secret_is_rendered_only_when_asked_for() -> None:
    names = ChildNames("team-a")

    def secrets(spec: dict[str, Any]) -> set[str]:
        return {s["metadata"]["name"] for s in of_kind(render(make(spec)), "Secret")}

    assert names.client_secret in secrets({})  # the default keeps today's shared Secret
    without = secrets({"tls": {"sharedClientCertificate": False}})
    assert without == {names.ca_secret, names.server_secret}
