"""Scale benchmark: N Builders applied at once on the local control plane.

Everything is measured side by side in one run, so the ratios hold on a shared, noisy
machine where absolute times do not:

- time from just before the apply to each Builder Ready, against two floors that create
  the same rendered objects with no operator at all (``kubectl apply --server-side`` of
  ``buildkit-operator render``, and a parallel Python server-side-apply client), counted to
  each Deployment available; the ratio is to the faster floor. The local cluster's
  controller manager runs with its client rate lifted (``--throttled`` keeps its default of
  20 requests a second), so the floors are bound by the API server, not by the controller
  that turns Deployments into pods;
- the operator's API requests and writes per Builder created, by verb and resource, from
  the API server's audit log (the operator runs as its own user, whose reads are recorded);
- writes in 60 s at rest, and in 60 s after a restart with every Builder converged (and
  how long until every Builder was reconciled again);
- the operator's RSS and CPU seconds with 0 and N Builders;
- drift repair: one Deployment deleted from each of 50 converged Builders at once.

Usage: ``python bench/scale.py [--n 100]`` (``make bench N=500``). JSON lands in
bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import urllib3
import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from localcluster.api import wait_for  # noqa: E402
from localcluster.binaries import build_tool_paths  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402
from localcluster.manifests import NODE_ALLOCATABLE  # noqa: E402

OPERATOR = REPO / ".venv" / "bin" / "buildkit-operator"
OPERATOR_USER = "buildkit-operator-bench"
RESULTS = REPO / "bench" / "results"
AT_REST = 60.0
DRIFT_COUNT = 50
PLURALS = {
    "ConfigMap": ("api/v1", "configmaps"),
    "Secret": ("api/v1", "secrets"),
    "Service": ("api/v1", "services"),
    "PersistentVolumeClaim": ("api/v1", "persistentvolumeclaims"),
    "Deployment": ("apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets"),
}
TARGETS = {
    "ratio": 1.2,
    # Its children (6 with an ephemeral cache and one daemon: three TLS Secrets, the
    # ConfigMap, the Service and the Deployment; no headless Service or budget for one
    # daemon), two status writes (Pending, then Ready) and one Event.
    "writes_per_builder": 9,
    "cpu_ms_per_builder": 30,
    "rss_mb": 150,
    "drift_p95_s": 1.0,
    "reverify_s": 30,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def builder_name(i: int) -> str:
    return f"b-{i:04d}"


def builders_yaml(n: int, namespace: str) -> str:
    docs = [
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": builder_name(i), "namespace": namespace},
            "spec": {"replicas": 1, "cache": {"type": "ephemeral"}},
        }
        for i in range(n)
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def percentiles(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": math.nan, "p95": math.nan, "all": math.nan, "count": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {"p50": at(0.5), "p95": at(0.95), "all": ordered[-1], "count": len(ordered)}


# --- the API, as the admin ---------------------------------------------------------------


def api_client(kubeconfig: Path, pool: int = 16) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


class Watcher:
    """Watches one collection and records, per object name, the first time ``ready`` held
    (after ``arm``); a raw watch, decoded as JSON only, so the bench itself stays light."""

    def __init__(
        self,
        api: client.ApiClient,
        path: str,
        ready: Callable[[Mapping[str, Any]], bool],
        key: Callable[[Mapping[str, Any]], str | None] = lambda o: o["metadata"]["name"],
    ) -> None:
        self.api, self.path, self.ready, self.key = api, path, ready, key
        self.times: dict[str, float] = {}
        self.objects: dict[str, Mapping[str, Any]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        """Forget what was ready, so the next ready time per name is recorded anew."""
        with self._lock:
            self.times = {}

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            query = [("watch", "1"), ("timeoutSeconds", "60"), ("allowWatchBookmarks", "true")]
            if version:
                query.append(("resourceVersion", version))
            try:
                url = f"{self.api.configuration.host}{self.path}?{urlencode(query)}"
                response = self.api.rest_client.pool_manager.request(
                    "GET", url, preload_content=False, timeout=urllib3.Timeout(connect=5, read=90)
                )
                if response.status == 410:
                    version = ""
                    continue
                buffer = b""
                for chunk in response.stream(1 << 16):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            found = self._event(json.loads(line))
                            version = version if found is None else found
                    if self._stop.is_set():
                        return
            except Exception as err:  # a dropped watch is resumed
                if "410" in str(err) or "Expired" in str(err):
                    version = ""
                else:
                    log(f"watch {self.path}: {err!r}")
                time.sleep(0.5)

    def _event(self, event: Mapping[str, Any]) -> str | None:
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            return ""
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if event.get("type") == "BOOKMARK":
            return str(version)
        name = self.key(obj)
        if name is None:
            return None
        now = time.time()
        with self._lock:
            if event.get("type") == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
                if name not in self.times and self.ready(obj):
                    self.times[name] = now
        return str(version)


def deployment_available(obj: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation") or 0
    return (
        (status.get("observedGeneration") or 0) >= generation
        and (status.get("availableReplicas") or 0) >= (obj.get("spec") or {}).get("replicas", 1)
        and (status.get("updatedReplicas") or 0) >= (obj.get("spec") or {}).get("replicas", 1)
    )


def builder_ready(obj: Mapping[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == "Ready"


def builder_of_deployment(obj: Mapping[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get("app.kubernetes.io/instance")
    return str(value) if value else None


def wait_all(watcher: Watcher, names: set[str], what: str, timeout: float) -> None:
    wait_for(lambda: names <= set(watcher.times), what, timeout, interval=0.2)


# --- the audit log -----------------------------------------------------------------------


class Audit:
    """Requests of one user in the audit log, from a byte offset on."""

    def __init__(self, path: Path, user: str) -> None:
        self.path, self.user = path, user

    def mark(self) -> int:
        return self.path.stat().st_size

    def requests(self, start: int, end: int | None = None) -> Counter[str]:
        counts: Counter[str] = Counter()
        seen: set[str] = set()
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(end - start)
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (entry.get("user") or {}).get("username") != self.user:
                continue
            if entry.get("auditID") in seen or entry.get("stage") not in (
                "ResponseComplete",
                "ResponseStarted",
                "Panic",
            ):
                continue
            seen.add(entry.get("auditID"))
            ref = entry.get("objectRef") or {}
            resource = ref.get("resource", "?") + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            counts[f"{entry['verb']} {resource}"] += 1
        return counts

    def first_writes(self, start: int, resource: str, names: set[str]) -> dict[str, float]:
        """When this user first wrote each of ``names`` (epoch seconds)."""
        first: dict[str, float] = {}
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read()
        for line in data.splitlines():
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            if (
                (entry.get("user") or {}).get("username") == self.user
                and entry.get("verb") in WRITE_VERBS
                and ref.get("resource") == resource
                and ref.get("name") in names
            ):
                stamp = datetime.fromisoformat(entry["requestReceivedTimestamp"]).timestamp()
                first.setdefault(ref["name"], stamp)
        return first


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def writes(counts: Mapping[str, int]) -> int:
    return sum(n for k, n in counts.items() if k.split(" ", 1)[0] in WRITE_VERBS)


# --- the operator as a process -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operator_env(source: str | None) -> dict[str, str]:
    """The environment to run the operator in; ``source`` is a checkout whose operator/
    package is imported instead of the installed one (to measure another commit)."""
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = str(Path(source).resolve() / "operator")
    return env


class Operator:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        extra: list[str],
        source: str | None = None,
        sample: str | None = None,
    ) -> None:
        self.kubeconfig, self.log_path, self.extra = kubeconfig, log_path, extra
        self.source = source
        # Where bench/sample.py writes its profile, one file per start (-0: the creation
        # and the rest; -1: the restart and the drift).
        self.sample = sample
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        command = [
            str(OPERATOR), "run", "--all-namespaces", "--metrics-port", str(self.port),
            *self.extra,
        ]  # fmt: skip
        if self.sample:
            out = f"{self.sample}-{self.starts}.json"
            command = [str(OPERATOR.parent / "python"), str(REPO / "bench" / "sample.py"), out]
            command += ["run", "--all-namespaces", "--metrics-port", str(self.port), *self.extra]
        self.starts += 1
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**operator_env(self.source), "KUBECONFIG": str(self.kubeconfig)},
                start_new_session=True,
            )
        wait_for(lambda: self.reconciles() is not None, "operator metrics", 60)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def reconciles(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("buildkit_operator_reconciles_total")
        )

    def usage(self) -> dict[str, float]:
        """RSS (MB) and CPU seconds (user + system) of the operator process so far."""
        assert self.process is not None
        pid = self.process.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        return {"rss_mb": rss_kb / 1024, "cpu_s": cpu}


# --- the floors ----------------------------------------------------------------------------


async def python_apply(
    kubeconfig: Path, objects: list[dict[str, Any]], concurrency: int = 32
) -> None:
    """Server-side apply of every object, ``concurrency`` at a time, as the admin."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    context.load_cert_chain(configuration.cert_file, configuration.key_file)
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def apply(obj: dict[str, Any]) -> None:
            prefix, plural = PLURALS[obj["kind"]]
            meta = obj["metadata"]
            url = (
                f"{configuration.host}/{prefix}/namespaces/{meta['namespace']}/{plural}/"
                f"{meta['name']}?fieldManager=bench-floor&force=true"
            )
            async with semaphore:
                for attempt in range(5):
                    async with session.patch(
                        url,
                        data=json.dumps(obj),
                        headers={"Content-Type": "application/apply-patch+yaml"},
                    ) as response:
                        if response.status < 300:
                            return
                        body = await response.text()
                    if response.status not in (409, 429, 500, 503) or attempt == 4:
                        raise RuntimeError(f"apply {obj['kind']} {meta['name']}: {body}")
                    await asyncio.sleep(0.2 * 2**attempt)

        await asyncio.gather(*(apply(o) for o in objects))


def render(n: int, namespace: str, workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    source = workdir / f"builders-{namespace}.yaml"
    source.write_text(builders_yaml(n, namespace))
    rendered = workdir / f"rendered-{namespace}.yaml"
    with open(rendered, "w") as out:
        subprocess.run(
            [str(OPERATOR), "render", "-f", str(source), "-n", namespace], stdout=out, check=True
        )
    return rendered, [d for d in yaml.safe_load_all(rendered.read_text()) if d]


# --- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, cluster: LocalCluster, workdir: Path) -> None:
        self.n = args.n
        self.args = args
        self.cluster = cluster
        self.workdir = workdir
        self.api = api_client(cluster.kubeconfig, pool=64)
        self.kubectl = cluster.kubectl()
        self.audit = Audit(cluster.audit_log, OPERATOR_USER)
        self.result: dict[str, Any] = {
            "n": self.n,
            "host": host_info(),
            "controller_manager_rate": "default" if args.throttled else "unthrottled",
        }
        self.names = {builder_name(i) for i in range(self.n)}

    def k(self, *args: str, input: str | None = None) -> str:
        """kubectl as the admin; raises KubectlError (a RuntimeError) when it fails."""
        return self.kubectl(*args, input=input, timeout=600)

    def namespace(self, name: str) -> None:
        self.k("create", "namespace", name)
        wait_for(
            lambda: self.cluster.api.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            f"ServiceAccount in {name}",
            60,
        )

    def drop_namespace(self, name: str) -> None:
        self.k("delete", "namespace", name, "--wait=false")
        wait_for(
            lambda: not self.cluster.api.exists(f"/api/v1/namespaces/{name}"),
            f"namespace {name} gone",
            600,
            interval=1,
        )

    def deployments(self, namespace: str) -> Watcher:
        return Watcher(
            self.api,
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            deployment_available,
            builder_of_deployment,
        ).start()

    def floor(self, name: str, apply: Callable[[Path, list[dict[str, Any]]], None]) -> None:
        namespace = f"floor-{name}"
        self.namespace(namespace)
        path, objects = render(self.n, namespace, self.workdir)
        watcher = self.deployments(namespace)
        time.sleep(1)
        log(f"floor {name}: applying {len(objects)} objects")
        start = time.time()
        apply(path, objects)
        applied = time.time() - start
        wait_all(watcher, self.names, f"floor {name} available", 60 + self.n * 2)
        watcher.stop()
        times = percentiles(t - start for t in watcher.times.values())
        log(f"floor {name}: all available after {times['all']:.1f}s (apply {applied:.1f}s)")
        self.result[f"floor_{name}"] = {**times, "apply_s": applied}
        self.drop_namespace(namespace)

    def kubectl_apply(self, path: Path, objects: list[dict[str, Any]]) -> None:
        self.k("apply", "--server-side", "--force-conflicts", "-f", str(path))

    def python_apply(self, path: Path, objects: list[dict[str, Any]]) -> None:
        asyncio.run(python_apply(self.cluster.kubeconfig, objects))

    def install(self) -> Path:
        self.k("apply", "--server-side", "-f", str(REPO / "crds" / "builders.buildkit.dev.yaml"))
        self.k("wait", "--for=condition=Established", "crd/builders.buildkit.dev", "--timeout=60s")
        role = next(
            doc
            for path in sorted((REPO / "manifests").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "ClusterRole"
        )
        role["metadata"] = {"name": OPERATOR_USER}
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_USER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": OPERATOR_USER,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        }
        self.k("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
        return self.cluster.client_kubeconfig(OPERATOR_USER)

    def run(self) -> dict[str, Any]:
        kubeconfig = self.install()
        if not self.args.skip_floors:
            self.floor("kubectl", self.kubectl_apply)
            self.floor("python", self.python_apply)

        namespace = "bench"
        self.namespace(namespace)
        op = Operator(
            kubeconfig,
            self.workdir / "operator.log",
            self.args.operator_args,
            self.args.source,
            self.args.sample,
        )
        try:
            op.start()
            return self.measure(op, namespace)
        finally:
            op.stop()

    def measure(self, op: Operator, namespace: str) -> dict[str, Any]:
        time.sleep(10)
        usage0 = op.usage()
        log(f"operator idle: {usage0}")
        self.result["operator_0"] = usage0

        builders = Watcher(
            self.api, f"/apis/buildkit.dev/v1alpha1/namespaces/{namespace}/builders", builder_ready
        ).start()
        deployments = self.deployments(namespace)
        source = self.workdir / "builders.yaml"
        source.write_text(builders_yaml(self.n, namespace))
        time.sleep(1)
        mark = self.audit.mark()
        passes = op.reconciles() or 0
        log(f"operator: applying {self.n} Builders")
        start = time.time()
        self.k("apply", "--server-side", "-f", str(source))
        wait_all(builders, self.names, "every Builder Ready", 120 + self.n * 3)
        times = percentiles(t - start for t in builders.times.values())
        log(f"operator: all Ready after {times['all']:.1f}s")
        self.result["operator"] = times
        self.settle(mark)
        counts = self.audit.requests(mark)
        usage = op.usage()
        self.result["create"] = {
            "requests": dict(sorted(counts.items())),
            "requests_per_builder": sum(counts.values()) / self.n,
            "writes_per_builder": writes(counts) / self.n,
            "cpu_ms_per_builder": (usage["cpu_s"] - usage0["cpu_s"]) * 1e3 / self.n,
            "reconciles_per_builder": ((op.reconciles() or 0) - passes) / self.n,
        }
        self.result["operator_n"] = usage
        log(f"operator: {self.result['create']}")

        mark = self.audit.mark()
        time.sleep(AT_REST)
        self.result["at_rest_writes"] = writes(self.audit.requests(mark))

        op.stop()
        mark = self.audit.mark()
        log("operator: restarting")
        start = time.time()
        op.start()
        before = op.reconciles() or 0
        wait_for(
            lambda: (op.reconciles() or 0) - before >= self.n,
            "every Builder reconciled after the restart",
            120 + self.n,
            interval=0.2,
        )
        reverified = time.time() - start
        time.sleep(max(0.0, AT_REST - reverified))
        restart_counts = self.audit.requests(mark)
        self.result["restart"] = {
            "reverified_s": reverified,
            "writes_60s": writes(restart_counts),
            "requests": dict(sorted(restart_counts.items())),
        }
        log(f"operator: restart {self.result['restart']}")

        self.result["drift"] = self.drift(namespace, deployments)
        self.result["operator_end"] = op.usage()
        builders.stop()
        deployments.stop()
        return self.result

    def settle(self, mark: int, quiet: float = 5.0, timeout: float = 120) -> None:
        """Until the operator has written nothing for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.audit.mark()
            time.sleep(quiet)
            if not writes(self.audit.requests(before)):
                return

    def drift(self, namespace: str, deployments: Watcher) -> dict[str, Any]:
        count = min(DRIFT_COUNT, self.n)
        victims = sorted(self.names)[:count]
        old = {
            builder_of_deployment(o): o["metadata"]["uid"]
            for o in list(deployments.objects.values())
        }
        deployments.reset()
        # Only a replacement (a new uid) counts as repaired.
        deployments.ready = lambda o: (
            deployment_available(o) and old.get(builder_of_deployment(o)) != o["metadata"]["uid"]
        )
        apps = client.AppsV1Api(self.api)
        log(f"drift: deleting {count} Deployments")
        mark = self.audit.mark()
        start = time.time()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(lambda b: apps.delete_namespaced_deployment(f"{b}-0", namespace), victims)
            )
        wait_all(deployments, set(victims), "every deleted Deployment back", 300)
        times = percentiles(deployments.times[v] - start for v in victims)
        written = self.audit.first_writes(mark, "deployments", {f"{v}-0" for v in victims})
        times["recreated"] = percentiles(t - start for t in written.values())
        log(f"drift: all back after {times['all']:.2f}s")
        return times


def host_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, StopIteration):
        mem = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
    return {"cpus": os.cpu_count(), "cpu": model, "memory_gib": round(mem / 2**20)}


def table(result: Mapping[str, Any]) -> str:
    n = result["n"]
    op = result["operator"]
    floors = {k[6:]: v for k, v in result.items() if k.startswith("floor_")}
    best = min(floors.values(), key=lambda f: f["all"]) if floors else None
    rate = result.get("controller_manager_rate", "default")
    lines = [
        f"scale benchmark: {n} Builders (ephemeral cache, 1 daemon each; "
        f"controller-manager client rate {rate})",
        "",
    ]
    lines.append(f"{'time to Ready, s':<44}{'p50':>8}{'p95':>8}{'all':>8}")
    lines.append(f"{'  operator':<44}{op['p50']:8.1f}{op['p95']:8.1f}{op['all']:8.1f}")
    for name, f in floors.items():
        label = f"  floor: {name} server-side apply"
        lines.append(f"{label:<44}{f['p50']:8.1f}{f['p95']:8.1f}{f['all']:8.1f}")
    if best:
        ratio_p50 = op["p50"] / min(f["p50"] for f in floors.values())
        ratio_all = op["all"] / best["all"]
        mark = "ok" if max(ratio_p50, ratio_all) <= TARGETS["ratio"] else "over"
        lines.append(
            f"{'  ratio to the faster floor (p50 / all)':<44}{ratio_p50:8.2f}{'':>8}"
            f"{ratio_all:8.2f}   target <= {TARGETS['ratio']} [{mark}]"
        )
    create = result["create"]
    lines.append("")

    def row(label: str, value: str, target: str = "", ok: bool | None = None) -> None:
        status = "" if ok is None else (" [ok]" if ok else " [over]")
        lines.append(f"{label:<44}{value:>24}   {target}{status}")

    row(
        "API writes per Builder created",
        f"{create['writes_per_builder']:.2f}",
        f"target <= {TARGETS['writes_per_builder']}",
        create["writes_per_builder"] <= TARGETS["writes_per_builder"],
    )
    row("API requests per Builder created", f"{create['requests_per_builder']:.2f}")
    for key, count in sorted(create["requests"].items(), key=lambda kv: -kv[1]):
        row(f"  {key}", f"{count / n:.2f}")
    row(
        "operator CPU per Builder created",
        f"{create['cpu_ms_per_builder']:.0f} ms",
        f"target <= {TARGETS['cpu_ms_per_builder']} ms",
        create["cpu_ms_per_builder"] <= TARGETS["cpu_ms_per_builder"],
    )
    if "reconciles_per_builder" in create:
        row("reconciles per Builder created", f"{create['reconciles_per_builder']:.1f}")
    o0, on = result["operator_0"], result["operator_n"]
    row("operator RSS at 0 Builders", f"{o0['rss_mb']:.0f} MB")
    row(
        f"operator RSS at {n} Builders",
        f"{on['rss_mb']:.0f} MB",
        f"target <= {TARGETS['rss_mb']} MB at 500",
        on["rss_mb"] <= TARGETS["rss_mb"],
    )
    row("operator CPU seconds at 0 Builders (startup)", f"{o0['cpu_s']:.1f} s")
    row(f"operator CPU seconds at {n} Builders", f"{on['cpu_s']:.1f} s")
    row(
        f"writes in {AT_REST:.0f} s at rest",
        str(result["at_rest_writes"]),
        "target 0",
        result["at_rest_writes"] == 0,
    )
    restart = result["restart"]
    row(
        f"writes in {AT_REST:.0f} s after a restart",
        str(restart["writes_60s"]),
        "target 0",
        restart["writes_60s"] == 0,
    )
    row(
        "every Builder re-verified after a restart",
        f"{restart['reverified_s']:.1f} s",
        f"target <= {TARGETS['reverify_s']} s",
        restart["reverified_s"] <= TARGETS["reverify_s"],
    )
    drift = result["drift"]
    row(
        f"drift: {drift['count']} Deployments deleted at once, p50 / p95",
        f"{drift['p50']:.2f} / {drift['p95']:.2f} s",
        f"target p95 < {TARGETS['drift_p95_s']} s",
        drift["p95"] < TARGETS["drift_p95_s"],
    )
    made = drift["recreated"]
    row(
        "  of which until the operator re-created each",
        f"{made['p50']:.2f} / {made['p95']:.2f} s",
    )
    row("operator RSS / CPU seconds at the end", f"{result['operator_end']['rss_mb']:.0f} MB / "
        f"{result['operator_end']['cpu_s']:.1f} s")  # fmt: skip
    host = result["host"]
    lines.append("")
    lines.append(f"machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory_gib']} GiB")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N") or 100))
    parser.add_argument("--dir", help="cluster directory (default: a new temporary one)")
    parser.add_argument("--skip-floors", action="store_true", help="measure the operator only")
    parser.add_argument(
        "--operator-arg",
        dest="operator_args",
        action="append",
        default=[],
        help="extra argument to `buildkit-operator run`; repeatable",
    )
    parser.add_argument(
        "--throttled",
        action="store_true",
        help="keep the controller manager's default client rate (as the tests run it): the "
        "floors are then bound by it, not by the API server",
    )
    parser.add_argument(
        "--sample",
        help="run the operator under bench/sample.py, a sampling profiler of every thread; "
        "its counts go to SAMPLE-0.json (creation) and SAMPLE-1.json (restart, drift)",
    )
    parser.add_argument("--label", default="", help="added to the JSON file's name")
    parser.add_argument(
        "--source",
        help="a checkout of another commit whose operator package is run instead (e.g. "
        "`git worktree add`), to compare commits",
    )
    args = parser.parse_args()

    # Room for every pod at once, with a margin: the default three nodes hold 330.
    extra = math.ceil(args.n * 1.2 / int(NODE_ALLOCATABLE["pods"]))
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="bko-bench-"))
    cluster = LocalCluster(
        workdir / "cluster",
        build_tool_paths(),
        die_with_parent=True,
        extra_nodes=extra,
        audit_read_users=[OPERATOR_USER],
        unthrottled=not args.throttled,
    )
    rate = "default" if args.throttled else "unthrottled"
    log(f"cluster in {cluster.dir} ({extra} extra nodes, {rate} controller-manager client rate)")
    # A SIGTERM stops the run like Ctrl-C, so the operator and the cluster are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    cluster.start()
    try:
        result = Bench(args, cluster, workdir).run()
    finally:
        cluster.stop()
    result["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = f"-{args.label}" if args.label else ""
    out = RESULTS / f"scale-n{args.n}-{stamp}{label}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(table(result))
    print(f"\nJSON: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
