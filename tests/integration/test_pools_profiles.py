"""Pools, per-daemon addresses, security profiles and idleness against the real API server.

Pods run on kwok nodes here (two amd64, one arm64): scheduling, Services, EndpointSlices and
Pod Security admission are the real control plane's; builds on the pools and profiles run in
tests/node.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from harness import OPERATOR_BIN, builder, child_writes, get, pods_of, wait_phase, wait_until

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

EPHEMERAL = {"type": "ephemeral", "size": "1Gi"}
POOLS = [{"platform": "linux/amd64", "replicas": 2}, {"platform": "linux/arm64", "replicas": 1}]


def _node_arch(k: Kubectl) -> dict[str, str]:
    nodes = k.json("get", "nodes")["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"]["kubernetes.io/arch"] for n in nodes}


def _connect(cluster: Any, *args: str, kubeconfig: Path | None = None) -> tuple[str, str]:
    proc = subprocess.run(
        [
            str(OPERATOR_BIN),
            "connect",
            *args,
            "--kubeconfig",
            str(kubeconfig or cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


# --- pools --------------------------------------------------------------------------------


def test_two_pools_run_on_their_architectures_with_an_endpoint_each(
    k: Kubectl, namespace: str, cluster: Any, tmp_path: Path
) -> None:
    k.apply(builder("multi", namespace, cache=EPHEMERAL, pools=POOLS))
    obj = wait_phase(k, "multi", namespace, "Ready")
    arch_of = _node_arch(k)
    pods = pods_of(k, namespace, "multi")
    assert len(pods) == 3
    placed: dict[str, list[str]] = {}
    for pod in pods:
        args = pod["spec"]["containers"][0]["args"]
        platform = args[args.index("--oci-worker-platform") + 1]
        node = pod["spec"]["nodeName"]
        assert arch_of[node] == platform.split("/")[1], (pod["metadata"]["name"], node)
        placed.setdefault(platform, []).append(node)
    assert {p: len(n) for p, n in placed.items()} == {"linux/amd64": 2, "linux/arm64": 1}

    status = obj["status"]
    assert status["ready"] == "3/3"
    pools = {p["platform"]: p for p in status["pools"]}
    assert set(pools) == {"linux/amd64", "linux/arm64"}
    for platform, pool in pools.items():
        assert pool["readyReplicas"] == pool["replicas"] == (2 if platform.endswith("amd64") else 1)
        host = re.fullmatch(r"tcp://([a-z0-9-]+)\.(.+)\.svc:1234", pool["endpoint"])
        assert host and host.group(2) == namespace, pool["endpoint"]
        # The pool's Service reaches that pool's pods only (the API server's EndpointSlices,
        # which the EndpointSlice controller fills a moment after the pods are ready).
        service = host.group(1)

        def ips(service: str = service) -> set[str]:
            slices = k.json(
                "get", "endpointslices", "-n", namespace, "-l",
                f"kubernetes.io/service-name={service}",
            )["items"]  # fmt: skip
            return {ip for s in slices for e in s.get("endpoints") or [] for ip in e["addresses"]}

        want = {p["status"]["podIP"] for p in pods if p["spec"]["nodeName"] in placed[platform]}
        wait_until(f"{platform}'s Service to reach its pods", lambda w=want: ips() == w, timeout=30)
        assert ips() == want, (platform, ips(), want)

    out, _ = _connect(cluster, "multi", "-n", namespace, "-o", str(tmp_path))
    creates = [line for line in out.splitlines() if line.startswith("docker buildx create")]
    assert len(creates) == 2, out
    assert "--append" not in creates[0] and "--append" in creates[1]
    for line, platform in zip(creates, ("linux/amd64", "linux/arm64"), strict=True):
        assert f"--platform {platform}" in line, line
        assert line.endswith(pools[platform]["endpoint"]), line
        assert "--name multi " in line, line


def test_every_daemon_has_its_own_dns_name_and_a_key_keeps_to_one_daemon(
    k: Kubectl, namespace: str, cluster: Any, tmp_path: Path
) -> None:
    k.apply(builder("sticky", namespace, cache=EPHEMERAL, replicas=3))
    obj = wait_phase(k, "sticky", namespace, "Ready")
    daemons = obj["status"]["daemons"]
    assert len(daemons) == 3 and all(d["ready"] for d in daemons)
    # Each address is <hostname>.<headless service>.<namespace>.svc: the records cluster DNS
    # serves come from the headless Service's EndpointSlices, which name each pod's hostname.
    (service,) = {d["address"].split(".")[1] for d in daemons}
    assert get(k, "service", service, namespace)["spec"]["clusterIP"] == "None"

    def hostnames() -> set[str | None]:
        slices = k.json(
            "get", "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
        )["items"]
        return {e.get("hostname") for s in slices for e in s.get("endpoints") or []}

    # The EndpointSlice controller follows the pods a moment after they are ready.
    names = {d["name"] for d in daemons}
    wait_until("every daemon's DNS record", lambda: hostnames() == names, timeout=30)
    for d in daemons:
        assert d["address"] == f"tcp://{d['name']}.{service}.{namespace}.svc:1234"

    picks = set()
    for _ in range(2):
        for key in ("registry.example/team/a", "registry.example/team/b"):
            out, _ = _connect(cluster, "sticky", "-n", namespace, "-o", str(tmp_path), "--key", key)
            (create,) = [line for line in out.splitlines() if line.startswith("docker buildx")]
            address = create.rsplit(" ", 1)[1]
            assert address in {d["address"] for d in daemons}, create
            host = address.removeprefix("tcp://").rsplit(":", 1)[0]
            assert f"servername={host}" in create, create
            picks.add((key, address))
    assert len(picks) == 2, picks  # the same key, the same daemon, every time


# --- security profiles and Pod Security admission -------------------------------------------

LEVELS = ("privileged", "baseline", "restricted")


def _pod_from_template(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "profile-check-", "namespace": namespace},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("profile", ["rootless", "userns", "privileged"])
def test_each_profile_is_admitted_where_pod_security_allows_it(
    k: Kubectl, namespace: str, cluster: Any, profile: str
) -> None:
    """Each profile's pods are what the API server admits in a namespace enforcing the
    privileged level, and refused (naming the rule) under baseline and restricted: BuildKit
    needs mounts and nested namespaces, which both forbid."""
    k("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=privileged")
    k.apply(builder("prof", namespace, cache=EPHEMERAL, securityProfile=profile))
    wait_phase(k, "prof", namespace, "Ready")
    (pod,) = pods_of(k, namespace, "prof")
    spec = pod["spec"]
    context = spec["containers"][0].get("securityContext") or {}
    if profile == "userns":
        assert spec["hostUsers"] is False and context.get("privileged") is True
    elif profile == "privileged":
        assert spec.get("hostUsers", True) is True and context.get("privileged") is True
    else:
        assert context["runAsUser"] == 1000 and not context.get("privileged")
    deployment = get(k, "deployment", "prof-0", namespace)
    for level in ("baseline", "restricted"):
        with cluster.temporary_namespace(f"{namespace[:50]}-{level[:4]}") as other:
            k("label", "namespace", other, f"pod-security.kubernetes.io/enforce={level}")
            out = k(
                "create", "--dry-run=server", "-f", "-",
                input=json.dumps(_pod_from_template(deployment, other)),
                check=False,
            )  # fmt: skip
            assert "violates PodSecurity" in out and f'"{level}:latest"' in out, (level, out)
    print(
        f"\nsecurityProfile {profile}: admitted under privileged; "
        "refused under baseline and restricted"
    )


def test_rootless_false_with_another_profile_is_refused_at_apply(
    k: Kubectl, namespace: str
) -> None:
    out = k(
        "apply", "-f", "-",
        input=json.dumps(
            builder("bad", namespace, rootless=False, securityProfile="userns")
        ),
        check=False,
    )  # fmt: skip
    assert "spec.securityProfile" in out and "rootless: false" in out, out


# --- idleness -------------------------------------------------------------------------------


def test_a_daemon_whose_idleness_cannot_be_judged_is_never_put_to_sleep(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    """kwok's pods are not reachable, so no daemon's activity can be read: after idleTimeout
    it still runs (from the audit log: the operator never scaled it down, not even for a
    moment), and status shows none Idle."""
    k.apply(builder("sleepy", namespace, cache=EPHEMERAL, idleTimeout="3s"))
    wait_phase(k, "sleepy", namespace, "Ready")
    since = time.time()
    time.sleep(8)
    # Putting it to sleep is a write to its Deployment (replicas 0, the idle-since
    # annotation): none over the window, nor any other write to what runs.
    assert child_writes(cluster, namespace, since) == []
    obj = get(k, "builder", "sleepy", namespace)
    assert obj["status"]["phase"] == "Ready"
    assert [d["idle"] for d in obj["status"]["daemons"]] == [False]
    assert get(k, "deployment", "sleepy-0", namespace)["spec"]["replicas"] == 1
    assert len(pods_of(k, namespace, "sleepy")) == 1


def test_a_builder_user_wakes_a_sleeping_daemon(k: Kubectl, namespace: str, cluster: Any) -> None:
    """Waking is an annotation on the Builder: a user who may edit Builders (and read their
    client Secret) needs nothing more, and the operator starts the daemon. kwok's daemons
    cannot be asked whether they build, so the operator never puts one to sleep here: the
    test writes the sleep the operator writes on the real node (tests/node), replicas 0 and
    the idle-since annotation, and the operator keeps it until the wake."""
    user = f"builder-user-{namespace}"
    k.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "builder-user", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["buildkit.dev"],
                    "resources": ["builders"],
                    "verbs": ["get", "list", "watch", "patch"],
                },
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            ],
        }
    )
    k(
        "create", "rolebinding", "builder-user", "-n", namespace,
        "--role=builder-user", f"--user={user}",
    )  # fmt: skip
    kubeconfig = cluster.client_kubeconfig(user)
    k.apply(builder("w", namespace, cache=EPHEMERAL, idleTimeout="1h"))
    wait_phase(k, "w", namespace, "Ready")
    slept = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    k("annotate", "deployment", "w-0", "-n", namespace, f"buildkit.dev/idle-since={slept}")
    k("scale", "deployment", "w-0", "-n", namespace, "--replicas=0")

    def asleep() -> bool:
        status = get(k, "builder", "w", namespace).get("status") or {}
        return [d["idle"] for d in status.get("daemons") or []] == [True] and not pods_of(
            k, namespace, "w"
        )

    wait_until("the daemon asleep and shown Idle", asleep)
    obj = get(k, "builder", "w", namespace)
    assert obj["status"]["phase"] == "Ready", obj["status"]
    assert get(k, "deployment", "w-0", namespace)["spec"]["replicas"] == 0

    proc = subprocess.run(
        [str(OPERATOR_BIN), "wake", "w", "-n", namespace, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "awake after" in proc.stderr, proc.stderr
    annotations = get(k, "builder", "w", namespace)["metadata"].get("annotations") or {}
    assert "buildkit.dev/wake" in annotations, annotations
    assert get(k, "deployment", "w-0", namespace)["spec"]["replicas"] == 1
    status = get(k, "builder", "w", namespace)["status"]
    assert [(d["ready"], d["idle"]) for d in status["daemons"]] == [(True, False)]
