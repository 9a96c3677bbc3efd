"""Fuzzing what users can write, against the real API server.

- Convergence: Hypothesis draws valid Builders over every field of the contract (lists
  whose items share keys, quantities in every spelling, raw config, each TLS mode); each is
  applied, and the operator must come to rest in the phase the spec leads to (Ready, or
  Degraded, Unschedulable, where no node matches its nodeSelector): no write (from the API
  server's audit log) and no Event for a window, whatever the spec.
- Hand edits: a random field the operator owns (read from the live object's managedFields,
  as the API server recorded them) of a random child is changed by hand, labels, Secret
  data and the keys of list items included; it is repaired within seconds (a certificate
  whose data was broken is issued anew), or, with noRecreate, reported (but the record of
  the spec last applied on the ConfigMap, which runs nothing, is put back).

The number of examples is small by default (each takes seconds against a real cluster);
BKO_FUZZ_EXAMPLES raises it. Failing examples are kept in Hypothesis' database and the
ones found so far are pinned with @example.
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import assert_at_rest, builder, get, settle, wait_until
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity

from localcluster.kubectl import Kubectl
from localcluster.manifests import NODE_ALLOCATABLE

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("BKO_FUZZ_EXAMPLES", "6"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("BKO_FUZZ_RANDOM") is None,
)

# --- what users write ----------------------------------------------------------------------

label_keys = st.sampled_from(["team", "example.com/tier", "dedicated", "kubernetes.io/arch"])
label_values = st.sampled_from(["a", "b", "amd64", "arm64", "x-1", "v1.2"])
cpu = st.sampled_from(["100m", "0.1", "1", "1e3", "250m", "2", "0.5", "1500m"])
memory = st.sampled_from(["1Gi", "512Mi", "1e9", "1G", "1.5Gi", "128974848", "129e6"])

toleration = st.fixed_dictionaries(
    {"key": st.sampled_from(["dedicated", "gpu"]), "operator": st.just("Exists")},
    optional={"effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"])},
)
match_expression = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["kubernetes.io/os", "zone"]),
        "operator": st.sampled_from(["In", "NotIn"]),
        "values": st.lists(st.sampled_from(["linux", "a", "b"]), min_size=1, max_size=2),
    }
)
affinity = st.one_of(
    st.none(),
    st.builds(
        lambda exprs: {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": exprs}}
                ]
            }
        },
        st.lists(match_expression, min_size=1, max_size=3),
    ),
)
spread = st.lists(
    st.fixed_dictionaries(
        {
            "maxSkew": st.integers(1, 3),
            "topologyKey": st.sampled_from(["kubernetes.io/hostname", "kubernetes.io/arch"]),
            "whenUnsatisfiable": st.just("ScheduleAnyway"),
        }
    ),
    max_size=2,
    unique_by=lambda c: c["topologyKey"],
)
resources = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "requests": st.fixed_dictionaries({}, optional={"cpu": cpu, "memory": memory}),
            "limits": st.fixed_dictionaries(
                {}, optional={"cpu": st.just("4"), "memory": st.just("8Gi")}
            ),
        },
    ),
)
raw_config = st.sampled_from(
    [
        None,
        "debug = true\n",
        "[history]\n  maxEntries = 5\n",
        "[worker.oci]\n  gc = true\n",
        '[registry."example.com"]\n  http = true\n',
    ]
)
buildkitd = st.fixed_dictionaries(
    {},
    optional={
        "args": st.lists(st.sampled_from(["--debug", "--trace"]), max_size=2, unique=True),
        "maxParallelism": st.integers(1, 8),
        "registryMirrors": st.dictionaries(
            st.sampled_from(["docker.io", "ghcr.io"]),
            st.lists(st.sampled_from(["mirror.internal:5000", "m2.internal"]), min_size=1),
            max_size=2,
        ),
        "insecureRegistries": st.lists(st.sampled_from(["r.internal:5000"]), max_size=1),
        "platforms": st.lists(st.sampled_from(["linux/amd64", "linux/arm64"]), unique=True),
        "config": raw_config,
    },
)
cache = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["persistent", "ephemeral"]),
        "size": st.sampled_from(["1Gi", "1.5Gi", "2048Mi", "3e9", "1G"]),
        "storageClassName": st.sampled_from(["standard", "fast-ssd"]),
        "retain": st.booleans(),
    },
)
tls = st.one_of(
    st.fixed_dictionaries(
        {"mode": st.just("auto")},
        optional={
            "extraSANs": st.lists(st.sampled_from(["b.example.com", "10.0.0.1"]), unique=True)
        },
    ),
    st.just({"mode": "secret", "secretName": "user-tls"}),
    st.just({"mode": "disabled"}),
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "rootless": st.booleans(),
        "replicas": st.integers(0, 2),
        "nodeSelector": st.dictionaries(label_keys, label_values, max_size=1),
        "tolerations": st.lists(toleration, max_size=3),
        "affinity": affinity,
        "topologySpreadConstraints": spread,
        "serviceAccountName": st.just("default"),
        "imagePullSecrets": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["pull-a", "pull-b"])}),
            max_size=2,
            unique_by=lambda r: r["name"],
        ),
        "podLabels": st.dictionaries(st.sampled_from(["team", "cost"]), label_values, max_size=2),
        "podAnnotations": st.dictionaries(
            st.sampled_from(["example.com/note", "prometheus.io/scrape"]),
            st.sampled_from(["", "true", "a b"]),
            max_size=2,
        ),
        "resources": resources,
        "buildkitd": buildkitd,
        "cache": cache,
        "tls": tls,
        "service": st.fixed_dictionaries({"type": st.sampled_from(["ClusterIP", "NodePort"])}),
        "noRecreate": st.booleans(),
        "drain": st.fixed_dictionaries(
            {},
            optional={
                "gracePeriodSeconds": st.sampled_from([0, 30, 600]),
                "maxWaitSeconds": st.sampled_from([0, 60]),
            },
        ),
        "metrics": st.fixed_dictionaries({"enabled": st.booleans()}),
    },
)


def _drop_none(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if v is not None}
    if isinstance(out.get("buildkitd"), dict):
        out["buildkitd"] = {k: v for k, v in out["buildkitd"].items() if v is not None}
    tls_mode = (out.get("tls") or {}).get("mode")
    service_type = (out.get("service") or {}).get("type")
    if tls_mode == "disabled" and service_type not in (None, "ClusterIP"):
        out["service"] = {"type": "ClusterIP"}  # refused at apply without an explicit opt-in
    return out


def _user_tls_secret(k: Kubectl, ns: str) -> None:
    """A valid server certificate for tls.mode secret, made once per namespace (made again,
    it would be a rotation, which rightly rolls the Builders that serve it)."""
    from buildkit_operator.pki import ensure_tls

    if k("get", "secret", "user-tls", "-n", ns, "--ignore-not-found", "-o", "name").strip():
        return
    bundle = ensure_tls({}, name="fz", server_sans=["fz"], now=datetime.now(UTC))
    data = {k2: base64.b64encode(v).decode() for k2, v in bundle.secret_data()["server"].items()}
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "user-tls", "namespace": ns},
            "data": data,
        }
    )


_counter = iter(range(10**6))


# The nodes of the local cluster carry these labels (hack's NODES); a nodeSelector asking
# for anything else schedules nothing.
NODE_LABELS = {"kubernetes.io/arch": {"amd64", "arm64"}, "kubernetes.io/os": {"linux"}}


def expected_phase(spec: dict[str, Any]) -> str:
    """Where a Builder of ``spec`` must come to rest on the local cluster: Ready, unless its
    nodeSelector matches no node or it asks more than a node has (its pods stay
    unscheduled: Degraded, as the scheduler says so)."""
    if spec.get("replicas", 1) == 0:
        return "Ready"
    selector = spec.get("nodeSelector") or {}
    if any(value not in NODE_LABELS.get(key, ()) for key, value in selector.items()):
        return "Degraded"
    # A request larger than a node's allocatable fits on no node either.
    requests = (spec.get("resources") or {}).get("requests") or {}
    if any(
        parse_quantity(value) > parse_quantity(NODE_ALLOCATABLE[resource])
        for resource, value in requests.items()
    ):
        return "Degraded"
    return "Ready"


def _converges(k: Kubectl, cluster: Any, ns: str, spec: dict[str, Any]) -> str:
    # The examples of one test share a namespace. An earlier example's Builder must not be
    # left to change on its own clock inside this one's window: one whose pods never ran
    # (Pending) is reported anew when its Deployment passes its progress deadline, ten
    # minutes on, and a run of 100 examples once caught exactly that as "writes at rest".
    k("delete", "builders", "--all", "-n", ns, "--wait=true")
    name = f"fz-{next(_counter)}"
    k.apply(builder(name, ns, **spec))
    generation = get(k, "builder", name, ns)["metadata"]["generation"]
    want = expected_phase(spec)

    def settled() -> bool:
        status = get(k, "builder", name, ns).get("status") or {}
        return status.get("observedGeneration") == generation and status.get("phase") == want

    wait_until(f"{name} {want}", settled, timeout=90)
    assert_at_rest(k, cluster, ns, name)
    assert get(k, "builder", name, ns)["status"]["phase"] == want
    return name


# Specs that once made the operator write for ever.
SHARED_KEY_TOLERATIONS = {
    "tolerations": [
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
    ]
}


@FUZZ
@given(spec=specs)
@example(spec=SHARED_KEY_TOLERATIONS)
@example(spec={"resources": {"requests": {"cpu": "0.1", "memory": "1e3"}}})
# Found by `make fuzz`: 1e3 CPUs fit on no node; the Builder rests Degraded (Unschedulable).
@example(
    spec={
        "topologySpreadConstraints": [
            {
                "whenUnsatisfiable": "ScheduleAnyway",
                "topologyKey": "kubernetes.io/arch",
                "maxSkew": 3,
            }
        ],
        "tls": {"extraSANs": ["b.example.com", "10.0.0.1"], "mode": "auto"},
        "rootless": False,
        "buildkitd": {"insecureRegistries": ["r.internal:5000"]},
        "cache": {"storageClassName": "fast-ssd", "retain": True},
        "noRecreate": True,
        "resources": {"limits": {"memory": "8Gi"}, "requests": {"cpu": "1e3"}},
    }
)
def test_every_valid_builder_converges_and_rests(
    k: Kubectl, namespace: str, cluster: Any, spec: dict[str, Any]
) -> None:
    _user_tls_secret(k, namespace)
    _converges(k, cluster, namespace, _drop_none(spec))


# --- hand edits ----------------------------------------------------------------------------

_KINDS = ("deployment", "service", "configmap", "secret")


Step = str | int | dict[str, Any]  # a field, a list index, or a list item's key fields


def _owned_leaves(obj: dict[str, Any]) -> list[list[Step]]:
    """Paths of the leaf fields the operator's manager owns on ``obj``; a list item is
    named by its key fields (as managedFields names it), so a path still finds it when
    the item moved or its key was edited and restored."""
    fields = next(
        (
            e["fieldsV1"]
            for e in obj["metadata"].get("managedFields") or []
            if e["manager"] == "buildkit-operator" and e["operation"] == "Apply"
        ),
        {},
    )
    leaves: list[list[Step]] = []

    def walk(node: dict[str, Any], value: Any, path: list[Step]) -> None:
        children = {k: v for k, v in node.items() if k != "."}
        if not children:
            leaves.append(path)
            return
        for key, sub in children.items():
            kind, _, text = key.partition(":")
            if kind == "f" and isinstance(value, dict) and text in value:
                walk(sub, value[text], [*path, text])
            elif kind == "k" and isinstance(value, list):
                want = json.loads(text)
                for item in value:
                    if all(item.get(a) == b for a, b in want.items()):
                        walk(sub, item, [*path, want])

    walk(fields, obj, [])
    return leaves


_MISSING = object()


def _at(obj: Any, path: list[Step]) -> Any:
    """The value at ``path``, or ``_MISSING`` where the object has none: an edit can remove
    a field (``readOnly: false`` is not stored, being the default) until it is repaired."""
    try:
        for part in path:
            if isinstance(part, dict):
                obj = next(i for i in obj if all(i.get(a) == b for a, b in part.items()))
            else:
                obj = obj[part]
    except (KeyError, IndexError, StopIteration, TypeError):
        return _MISSING
    return obj


def _indexed(obj: Any, path: list[Step]) -> list[str | int]:
    """``path`` with list items named by their index in ``obj`` (for a JSON patch)."""
    out: list[str | int] = []
    for part in path:
        if isinstance(part, dict):
            index = next(
                n for n, i in enumerate(obj) if all(i.get(a) == b for a, b in part.items())
            )
            out.append(index)
            obj = obj[index]
        else:
            out.append(part)
            obj = obj[part]
    return out


def _edited(value: Any, path: list[Step]) -> Any:
    if path[:1] == ["data"] and isinstance(value, str):  # a Secret's data: base64
        return base64.b64encode(b"edited by hand").decode()
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "-edited" if value else "edited"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [*value, "edited"]
    return None


def _pointer(path: list[str | int]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _text(path: list[Step]) -> str:
    return ".".join(json.dumps(p, sort_keys=True) if isinstance(p, dict) else str(p) for p in path)


# An edit of the owner reference makes the object someone else's: the operator must then
# leave it alone and report a conflict (test_safety), not repair it.
def _skipped(kind: str, path: list[Step]) -> bool:
    return _text(path).startswith("metadata.ownerReferences")


@FUZZ
@given(
    spec=specs,
    kind=st.sampled_from(_KINDS),
    choice=st.integers(0, 10**6),
)
# Found by `make fuzz`: the edit set a volumeMount's readOnly to false, which the API server
# stores as no field at all, and the check of the repair failed on the missing field.
@example(
    spec={
        "buildkitd": {
            "platforms": [],
            "args": ["--trace"],
            "config": '[registry."example.com"]\n  http = true\n',
            "registryMirrors": {
                "docker.io": ["mirror.internal:5000"] * 5,
                "ghcr.io": ["mirror.internal:5000"],
            },
            "insecureRegistries": ["r.internal:5000"],
            "maxParallelism": 6,
        },
        "nodeSelector": {},
        "replicas": 0,
        "tolerations": [
            {"key": "gpu", "effect": "NoSchedule", "operator": "Exists"},
            {"effect": "NoExecute", "operator": "Exists", "key": "dedicated"},
            {"operator": "Exists", "key": "gpu"},
        ],
        "cache": {"size": "2048Mi", "storageClassName": "fast-ssd", "type": "ephemeral"},
        "topologySpreadConstraints": [
            {
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "maxSkew": 1,
            }
        ],
    },
    kind="deployment",
    choice=9425,
)
# Found by `make fuzz`: an edit of one of two unschedulable daemons waited for the other
# "to finish its roll", which it never would.
@example(
    spec={
        "imagePullSecrets": [{"name": "pull-b"}, {"name": "pull-a"}],
        "podLabels": {"team": "x-1"},
        "serviceAccountName": "default",
        "tolerations": [
            {"operator": "Exists", "key": "gpu"},
            {"operator": "Exists", "key": "dedicated", "effect": "NoExecute"},
            {"key": "gpu", "effect": "PreferNoSchedule", "operator": "Exists"},
        ],
        "replicas": 2,
        "noRecreate": False,
        "nodeSelector": {"kubernetes.io/arch": "x-1"},
        "rootless": False,
        "topologySpreadConstraints": [
            {
                "maxSkew": 2,
                "whenUnsatisfiable": "ScheduleAnyway",
                "topologyKey": "kubernetes.io/arch",
            }
        ],
        "tls": {"mode": "secret", "secretName": "user-tls"},
        "service": {"type": "NodePort"},
        "buildkitd": {},
        "metrics": {"enabled": True},
    },
    kind="deployment",
    choice=68149,
)
# Found by the integration tier: a hand edit of the digest of what the operator applied
# (buildkit.dev/intent) was never put back.
@example(spec={}, kind="deployment", choice=0)
def test_a_hand_edit_of_any_field_the_operator_sets_is_repaired(
    k: Kubectl, namespace: str, cluster: Any, spec: dict[str, Any], kind: str, choice: int
) -> None:
    spec = _drop_none(spec)
    if (spec.get("tls") or {}).get("mode") == "secret":
        _user_tls_secret(k, namespace)
    if spec.get("replicas") == 0:
        spec["replicas"] = 1
    if kind == "secret" and (spec.get("tls") or {}).get("mode", "auto") != "auto":
        kind = "configmap"
    name = _converges(k, cluster, namespace, spec)
    target = {
        "deployment": f"{name}-0",
        "service": name,
        "configmap": f"{name}-config",
        "secret": f"{name}-ca",
    }[kind]
    obj = k.json("get", kind, target, "-n", namespace, "--show-managed-fields")
    leaves = [p for p in _owned_leaves(obj) if not _skipped(kind, p)]
    assert leaves, f"the operator owns no field of {kind} {target}"
    # Try fields from the drawn one on until the API server takes an edit (some fields
    # are immutable or must stay consistent, such as a Deployment's selector).
    for offset in range(len(leaves)):
        path = leaves[(choice + offset) % len(leaves)]
        old = _at(obj, path)
        new = _edited(old, path)
        if new is None:
            continue
        patch = [{"op": "replace", "path": _pointer(_indexed(obj, path)), "value": new}]
        refused = k(
            "patch",
            kind,
            target,
            "-n",
            namespace,
            "--type=json",
            "-p",
            json.dumps(patch),
            check=False,
        )
        if "patched" in refused:
            break
    else:
        # Every child has labels the operator sets and the API server lets change.
        raise AssertionError(f"the API server took no edit of any field of {kind} {target}")

    where = _text(path)
    broken_certificate = kind == "secret" and path[:1] == ["data"]
    # The record of the spec last applied runs nothing: noRecreate puts it back too.
    spec_record = path[:2] == ["metadata", "annotations"] and path[2:] in (
        ["buildkit.dev/applied-spec"],
        ["buildkit.dev/intent"],
    )
    if spec.get("noRecreate") and not broken_certificate and not spec_record:

        def reported() -> bool:
            status = get(k, "builder", name, namespace).get("status") or {}
            return any(target in d for d in status.get("driftedFields") or [])

        wait_until(f"the edit of {kind} {target} {where} reported", reported, timeout=30)
    elif broken_certificate:
        # Not restorable: a CA whose data was broken is issued anew, and its leaves with it.
        wait_until(
            f"{kind} {target} {where} replaced",
            lambda: _at(get(k, kind, target, namespace), path) != new,
            timeout=30,
        )
        wait_until(
            f"{name} Ready again",
            lambda: (
                (get(k, "builder", name, namespace).get("status") or {}).get("phase")
                == expected_phase(spec)
            ),
            timeout=60,
        )
    else:
        wait_until(
            f"{kind} {target} {where} repaired to {old!r}",
            lambda: _at(get(k, kind, target, namespace), path) == old,
            timeout=30,
        )
    settle(cluster, namespace)


def test_certificates_are_renewed_under_no_recreate(k: Kubectl, namespace: str) -> None:
    """Certificates are not drift: noRecreate never holds back their renewal, and status
    shows the certificate the daemons were given."""
    from cryptography import x509

    from buildkit_operator.api import Builder
    from buildkit_operator.pki import ensure_tls
    from buildkit_operator.render import server_sans

    spec = {"noRecreate": True, "cache": {"type": "ephemeral", "size": "1Gi"}}
    k.apply(builder("nr", namespace, **spec))
    wait_until(
        "nr Ready",
        lambda: get(k, "builder", "nr", namespace).get("status", {}).get("phase") == "Ready",
        60,
    )
    hash_before = _at(
        get(k, "deployment", "nr-0", namespace),
        ["spec", "template", "metadata", "annotations", "buildkit.dev/tls-hash"],
    )
    ca = {
        key: base64.b64decode(v) for key, v in get(k, "secret", "nr-ca", namespace)["data"].items()
    }
    short = ensure_tls(
        {"ca": ca},
        name="nr",
        server_sans=server_sans(Builder.from_manifest(builder("nr", namespace, **spec))),
        now=datetime.now(UTC),
        leaf_validity=timedelta(days=20),
        renew_before=timedelta(days=1),
    ).secret_data()["server"]
    planted = {key: base64.b64encode(value).decode() for key, value in short.items()}
    k(
        "patch",
        "secret",
        "nr-server-tls",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": planted}),
    )

    def renewed() -> x509.Certificate | None:
        data = get(k, "secret", "nr-server-tls", namespace)["data"]
        if data["cert.pem"] == planted["cert.pem"]:
            return None
        return x509.load_pem_x509_certificate(base64.b64decode(data["cert.pem"]))

    cert = wait_until("the server certificate renewed despite noRecreate", renewed, timeout=30)
    assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    wait_until(
        "the pods rolled onto it",
        lambda: (
            _at(
                get(k, "deployment", "nr-0", namespace),
                ["spec", "template", "metadata", "annotations", "buildkit.dev/tls-hash"],
            )
            != hash_before
        ),
        30,
    )
    wait_until(
        "status shows the renewed certificate",
        lambda: (
            get(k, "builder", "nr", namespace)["status"].get("certificateNotAfter")
            == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        30,
    )
    time.sleep(1)
    assert get(k, "builder", "nr", namespace)["status"]["phase"] == "Ready"
