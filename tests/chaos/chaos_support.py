"""What the chaos tier drives and checks: operator replicas as killable processes, the
audit log read by user, the Builders' expected children (from the contract's names), and
the invariants that must hold after every fault."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from operator_process import OperatorProcess, operator_binary

from buildkit_operator.api.names import ChildNames
from localcluster.kubectl import Kubectl, KubectlError

LEASE = "buildkit-operator"
MANAGED = "app.kubernetes.io/managed-by=buildkit-operator"
LABEL_BUILDER = "buildkit.dev/builder"
CHILD_KINDS = "deployments,services,configmaps,secrets,persistentvolumeclaims,poddisruptionbudgets"
FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
    print(f"\nchaos: {line}")


class Replica(OperatorProcess):
    """``buildkit-operator run --leader-elect`` as user ``user``."""

    def __init__(
        self, name: str, user: str, args: Sequence[str], env: dict[str, str], log_path: Path
    ) -> None:
        super().__init__([str(operator_binary()), "run", *args], env, log_path)
        self.name, self.user = name, user

    def identity(self) -> str | None:
        """This process's candidate identity (the last start's), from its log."""
        found = re.findall(r"leader election: (\S+) waits for Lease", self.log())
        return found[-1] if found else None

    def leads(self) -> bool:
        identity = self.identity()
        return bool(self.running and identity and f"{identity} leads" in self.log())


def lease_holder(k: Kubectl, namespace: str) -> str | None:
    out = k("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    try:
        return json.loads(out)["spec"].get("holderIdentity")
    except (ValueError, KeyError):
        return None


class Audit:
    """The audit log's write records (the cluster's policy records writes only), read from
    where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.entries: list[dict[str, Any]] = []

    def update(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            entry = json.loads(line)
            if entry.get("stage") == "ResponseComplete":
                entry["_when"] = datetime.fromisoformat(
                    entry["requestReceivedTimestamp"]
                ).timestamp()
                self.entries.append(entry)
        return self.entries

    def writes(self, users: Iterable[str], since: float, namespace: str | None = None) -> list[str]:
        users = set(users)
        return [
            f"{e['user']['username']} {e['verb']} {e.get('requestURI')} -> "
            f"{(e.get('responseStatus') or {}).get('code')}"
            for e in self.update()
            if e["_when"] >= since
            and e.get("user", {}).get("username") in users
            and (namespace is None or f"/namespaces/{namespace}/" in e.get("requestURI", ""))
        ]


def secret_fingerprint(secret: Mapping[str, Any]) -> tuple[str, str]:
    """(uid, digest of the data): a re-issued certificate changes the digest, a recreated
    Secret the uid."""
    data = json.dumps(secret.get("data") or {}, sort_keys=True).encode()
    return secret["metadata"]["uid"], hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Expected:
    """The spec the test last wrote to one Builder."""

    replicas: int = 1
    parallelism: int = 2

    def spec(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "cache": {"size": "1Gi"},
            "buildkitd": {"maxParallelism": self.parallelism},
        }


@dataclass
class Ledger:
    """What was seen once and must never be lost or changed behind our back."""

    secrets: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)  # name -> uid
    foreign: dict[str, str] = field(default_factory=dict)  # kind/name -> resourceVersion


def expected_children(name: str, replicas: int) -> set[str]:
    """The contract's children of a Builder with a persistent cache and TLS auto: the
    Service, the config, the certificates and a Deployment per daemon (claims are checked
    apart), and with more than one daemon the headless Service of the daemons' own names
    and the disruption budget."""
    names = ChildNames(name)
    several = (
        {f"Service/{names.daemons_service}", f"PodDisruptionBudget/{names.disruption_budget}"}
        if replicas > 1
        else set()
    )
    return several | {
        f"Service/{names.service}",
        f"ConfigMap/{names.config_map}",
        f"Secret/{names.ca_secret}",
        f"Secret/{names.server_secret}",
        f"Secret/{names.client_secret}",
        *(f"Deployment/{names.daemon(i)}" for i in range(replicas)),
    }


def convergence_problems(
    k: Kubectl, namespace: str, want: Mapping[str, Expected], conflicted: Sequence[str]
) -> list[str]:
    """Why the namespace does not (yet) show what the specs say; empty when it does.

    Ready is believed only where every daemon runs the current spec: each Deployment rolled
    out at its generation with one up-to-date ready pod, its config the one the spec says."""
    problems: list[str] = []
    builders = {
        b["metadata"]["name"]: b for b in k.json("get", "builders", "-n", namespace)["items"]
    }
    extra = set(builders) - set(want) - set(conflicted)
    if extra:
        problems.append(f"Builders still there: {sorted(extra)}")
    items = k.json("get", CHILD_KINDS, "-n", namespace, "-l", MANAGED)["items"]
    by_builder: dict[str, dict[str, dict[str, Any]]] = {}
    for item in items:
        label = item["metadata"]["labels"].get(LABEL_BUILDER, "")
        by_builder.setdefault(label, {})[f"{item['kind']}/{item['metadata']['name']}"] = item
    for name, spec in want.items():
        obj = builders.get(name)
        if obj is None:
            problems.append(f"{name}: missing")
            continue
        status = obj.get("status") or {}
        meta = obj["metadata"]
        if status.get("observedGeneration") != meta["generation"] or status.get("phase") != "Ready":
            problems.append(
                f"{name}: phase {status.get('phase')} at {status.get('observedGeneration')}"
                f"/{meta['generation']}"
            )
            continue
        if status.get("readyReplicas") != spec.replicas:
            problems.append(f"{name}: Ready with readyReplicas {status.get('readyReplicas')}")
        children = by_builder.get(name, {})
        # Its children are what carries an owner reference (a lookalike carrying our labels
        # is someone else's); retained claims carry none.
        owned = {
            key
            for key, child in children.items()
            if not key.startswith("PersistentVolumeClaim/")
            and any(
                r.get("kind") == "Builder" for r in child["metadata"].get("ownerReferences") or []
            )
        }
        wanted = expected_children(name, spec.replicas)
        if owned != wanted:
            problems.append(
                f"{name}: Ready with children +{sorted(owned - wanted)} -{sorted(wanted - owned)}"
            )
        for key in owned & wanted:
            refs = children[key]["metadata"].get("ownerReferences") or []
            if [r.get("uid") for r in refs] != [meta["uid"]]:
                problems.append(f"{name}: {key} owned by {refs}")
        names = ChildNames(name)
        claims = {key for key in children if key.startswith("PersistentVolumeClaim/")}
        for i in range(spec.replicas):
            if f"PersistentVolumeClaim/{names.cache_claim(i)}" not in claims:
                problems.append(f"{name}: Ready without cache claim {i}")
        config = children.get(f"ConfigMap/{names.config_map}", {}).get("data") or {}
        if not any(f"max-parallelism = {spec.parallelism}" in v for v in config.values()):
            problems.append(f"{name}: Ready, config without max-parallelism {spec.parallelism}")
        for i in range(spec.replicas):
            deployment = children.get(f"Deployment/{names.daemon(i)}")
            if deployment is None:
                continue
            ds = deployment.get("status") or {}
            current = (
                ds.get("observedGeneration") == deployment["metadata"]["generation"]
                and ds.get("replicas") == ds.get("updatedReplicas") == ds.get("readyReplicas") == 1
            )
            if not current:
                problems.append(f"{name}: Ready while daemon {i} runs {ds}")
    for name in conflicted:
        obj = builders.get(name) or {}
        status = obj.get("status") or {}
        reasons = [c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if status.get("observedGeneration") != obj.get("metadata", {}).get("generation") or (
            reasons != ["Conflict"]
        ):
            problems.append(f"{name}: not reported as Conflict: {status.get('phase')} {reasons}")
    return problems


def ledger_problems(k: Kubectl, namespace: str, ledger: Ledger) -> list[str]:
    """Certificates re-issued while valid, claims lost, foreign objects touched: each is a
    problem; what is new is recorded for the next look."""
    problems = []
    builders = {
        b["metadata"]["name"]: b["metadata"]["uid"]
        for b in k.json("get", "builders", "-n", namespace)["items"]
    }
    secrets = k.json("get", "secrets", "-n", namespace, "-l", MANAGED)["items"]
    for secret in secrets:
        refs = secret["metadata"].get("ownerReferences") or []
        if not refs:
            continue
        key = (refs[0]["uid"], secret["metadata"]["name"])
        if refs[0]["name"] not in builders:
            continue
        seen = ledger.secrets.get(key)
        now = secret_fingerprint(secret)
        if seen is not None and seen != now:
            problems.append(f"Secret {key[1]} of Builder uid {key[0]} changed: {seen} -> {now}")
        ledger.secrets[key] = now
    claims = {
        c["metadata"]["name"]: c["metadata"]["uid"]
        for c in k.json("get", "pvc", "-n", namespace)["items"]
    }
    for name, uid in ledger.claims.items():
        if claims.get(name) != uid:
            problems.append(f"cache claim {name} (uid {uid}) lost: now {claims.get(name)}")
    for name, uid in claims.items():
        ledger.claims.setdefault(name, uid)
    for key, version in ledger.foreign.items():
        kind, name = key.split("/", 1)
        obj = k.json("get", kind, name, "-n", namespace)
        if obj["metadata"]["resourceVersion"] != version:
            problems.append(f"foreign {key} touched: {obj['metadata'].get('managedFields')}")
    return problems


def wait_converged(
    k: Kubectl,
    namespace: str,
    want: Mapping[str, Expected],
    conflicted: Sequence[str],
    timeout: float,
    alive: Any = None,
) -> float:
    """Seconds until convergence_problems is empty; fail with the last problems."""
    started = time.monotonic()
    problems: list[str] = []
    while time.monotonic() - started < timeout:
        if alive is not None:
            alive()
        try:
            problems = convergence_problems(k, namespace, want, conflicted)
        except (AssertionError, ValueError) as err:  # the API server is still coming back
            problems = [str(err)[:300]]
        if not problems:
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(
        f"not converged after {timeout:.0f}s: {len(problems)} problems: {problems[:10]}\n"
        + diagnose(k, namespace, sorted({p.split(":")[0] for p in problems})[:3])
    )


def diagnose(k: Kubectl, namespace: str, names: Sequence[str]) -> str:
    """What the API server holds for Builders that did not converge: their status, their
    Deployments' status, their pods and claims."""
    lines = []
    for name in names:
        try:
            obj = k.json("get", "builder", name, "-n", namespace)
            lines.append(f"--- {name}: {json.dumps(obj.get('status'))[:1500]}")
            selector = f"{LABEL_BUILDER}={name}"
            for item in k.json("get", "deployments,pvc", "-n", namespace, "-l", selector)["items"]:
                lines.append(
                    f"{item['kind']}/{item['metadata']['name']} gen "
                    f"{item['metadata'].get('generation')}: {json.dumps(item.get('status'))[:600]}"
                )
            pods = k.json(
                "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}"
            )
            for pod in pods["items"]:
                conditions = json.dumps(pod["status"].get("conditions"))[:400]
                lines.append(
                    f"Pod/{pod['metadata']['name']} on {pod['spec'].get('nodeName')}: "
                    f"{pod['status'].get('phase')} {conditions}"
                )
        except KubectlError as err:
            lines.append(f"--- {name}: {err}")
    return "\n".join(lines)
