#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, for the tests and for development.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which plays the
kubelets of three fake nodes) as local processes built from the pinned Go modules under
hack/tools/. Pods are really scheduled by kube-scheduler, Deployments really roll out through
kube-controller-manager, PersistentVolumeClaims really bind through the PV controller, and
RBAC is enforced. Nothing runs in containers: kwok marks scheduled pods Running and Ready.

    python hack/cluster.py up --dir DIR [--bin-path PATHS]   start (no-op if already running)
    python hack/cluster.py env --dir DIR [--path PATHS]      print export lines for a shell
    python hack/cluster.py status --dir DIR                  show the processes
    python hack/cluster.py recycle --dir DIR                 make Released volumes Available
    python hack/cluster.py down --dir DIR                    stop everything

Importable (tests put hack/ on sys.path):

    cluster = LocalCluster(tmp_dir, bin_paths).start()
    cluster.kubeconfig, cluster.audit_log, cluster.api.get("/version"), cluster.recycle_volumes()
    cluster.stop()

Layout of DIR: kubeconfig (admin, system:masters), audit.log (write requests at Metadata
level), state.json (ports and process ids), logs/<component>.log, pki/, etcd/, config/.
All servers listen on free 127.0.0.1 ports, so several clusters can run side by side.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HACK_DIR = Path(__file__).resolve().parent
BUILD_TOOLS = HACK_DIR / "build-tools.sh"
KWOK_STAGES = HACK_DIR / "tools" / "kwok" / "stages.yaml"

KUBERNETES_VERSION = "v1.36.3"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
CLUSTER_NAME = "bko-local"

# Annotation by which kwok recognises the nodes it manages.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    arch: str


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("kwok-amd64-1", "amd64"),
    NodeSpec("kwok-amd64-2", "amd64"),
    NodeSpec("kwok-arm64-1", "arm64"),
)
NODE_ALLOCATABLE = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}

# StorageClass name -> number of pre-made 100Gi PersistentVolumes. The first is the default.
STORAGE_CLASSES: dict[str, int] = {"standard": 80, "fast-ssd": 40}
VOLUME_SIZE = "100Gi"
VOLUME_LABEL = "buildkit-operator.dev/local-cluster-volume"

# kube-controller-manager controllers: the workload, garbage collection, namespace, service
# account and volume machinery the operator relies on, and the disruption controller, which
# keeps the PodDisruptionBudgets' counts that evictions (kubectl drain) go by (no node
# lifecycle: kwok nodes stay Ready).
CONTROLLERS = (
    "garbage-collector-controller",
    "disruption-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # Quotas are how a cluster refuses writes with 403: the operator's handling is tested.
    "resourcequota-controller",
    # Type-checks admission policies against the schemas they read (the chart's policy).
    "validatingadmissionpolicy-status-controller",
)

# Only write requests are recorded, at Metadata level (who, what, when; no bodies).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


def audit_policy(read_users: Sequence[str] = ()) -> dict[str, Any]:
    """AUDIT_POLICY, with every request of ``read_users`` recorded as well (a watch is
    recorded once it starts)."""
    if not read_users:
        return AUDIT_POLICY
    rules = [{"level": "Metadata", "users": list(read_users)}, *AUDIT_POLICY["rules"]]
    return {**AUDIT_POLICY, "rules": rules}


# Components in start order; stop goes in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)


def log(message: str) -> None:
    """Progress goes to stderr: stdout is kept for what a caller evaluates."""
    print(f"cluster: {message}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


class ComponentExited(ClusterError):
    """A process of the cluster exited: waiting longer cannot help."""


T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll check() until it returns a truthy value; raise ClusterError after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except ComponentExited:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------- binaries


def split_paths(paths: str | Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, str):
        return [Path(p) for p in paths.split(os.pathsep) if p]
    return [Path(p) for p in paths]


def build_tool_paths(tools: Sequence[str] = ("kubernetes", "etcd", "kwok")) -> list[Path]:
    """Build the pinned tools that are not cached yet and return their bin directories."""
    result = subprocess.run(
        [str(BUILD_TOOLS), "--print-path", *tools],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(
            f"{BUILD_TOOLS.name} {' '.join(tools)} failed (exit {result.returncode}); "
            "its output above says why"
        )
    return split_paths(result.stdout.strip())


def find_binaries(bin_paths: Sequence[Path]) -> dict[str, Path]:
    """Locate our binaries in bin_paths only: never the PATH, which may hold other builds."""
    found: dict[str, Path] = {}
    for name in BINARIES:
        for directory in bin_paths:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate.resolve()
                break
    missing = [n for n in BINARIES if n not in found]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)} in {os.pathsep.join(map(str, bin_paths)) or '(none)'}; "
            f"build them with: {BUILD_TOOLS} --print-path kubernetes etcd kwok"
        )
    return found


# --------------------------------------------------------------------------- PKI


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def first_service_ip(cidr: str = SERVICE_CIDR) -> str:
    return str(next(ipaddress.ip_network(cidr).hosts()))


def kubeconfig_document(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


# --------------------------------------------------------------------------- API client


class ApiError(ClusterError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Api:
    """A minimal Kubernetes REST client on the standard library (client certificate auth)."""

    def __init__(
        self, host: str, port: int, ca_file: Path, cert_file: Path, key_file: Path
    ) -> None:
        self.host = host
        self.port = port
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._context.load_cert_chain(str(cert_file), str(key_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self._context, timeout=timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = content_type
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        if response.status >= 300:
            raise ApiError(method, path, response.status, text)
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, obj: Mapping[str, Any], exist_ok: bool = True) -> Any:
        try:
            return self.request("POST", path, obj)
        except ApiError as exc:
            if exist_ok and exc.status == 409:
                return None
            raise

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def delete(self, path: str, missing_ok: bool = True) -> Any:
        try:
            return self.request("DELETE", path)
        except ApiError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def https_ok(port: int, path: str, ca_file: Path, timeout: float = 2) -> bool:
    """True if https://127.0.0.1:port/path answers 200 with a certificate from ca_file."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def http_ok(port: int, path: str, timeout: float = 2) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


class KubectlError(ClusterError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr


class Kubectl:
    """Runs a given kubectl binary with a kubeconfig; ``__call__`` raises on a non-zero exit."""

    def __init__(self, binary: Path, kubeconfig: Path, cache_dir: Path | None = None) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.env["KUBECONFIG"] = str(kubeconfig)
        if cache_dir is not None:
            self.env["KUBECACHEDIR"] = str(cache_dir)

    def run(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return the completed process, whatever its exit status."""
        return subprocess.run(
            [str(self.binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """Run kubectl and return its stdout; raise KubectlError (with stderr) on failure."""
        result = self.run(*args, input=input, timeout=timeout)
        if result.returncode != 0:
            raise KubectlError(args, result)
        return result.stdout

    def json(self, *args: str, input: str | None = None, timeout: float = 60) -> Any:
        """Run kubectl with ``-o json`` and parse the output."""
        return json.loads(self(*args, "-o", "json", input=input, timeout=timeout))


# --------------------------------------------------------------------------- processes


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1, all distinct (the sockets are held together)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by pid (each component runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _parent_death_signal() -> Callable[[], None]:
    """A preexec_fn: the child is killed when the process that started it dies.

    SIGKILL, not SIGTERM: all components get it at once, and a kube-apiserver whose etcd
    went away at the same moment hangs in its graceful shutdown. The data is thrown away.
    libc is loaded here, in the parent: the child must not import anything between fork
    and exec.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return preexec


@dataclass
class State:
    """What a running cluster needs to be found again: ports, pids and the binaries used."""

    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    binaries: dict[str, str] = field(default_factory=dict)
    started: float = 0.0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        return cls(
            ports={k: int(v) for k, v in data["ports"].items()},
            pids={k: int(v) for k, v in data.get("pids", {}).items()},
            binaries=dict(data.get("binaries", {})),
            started=float(data.get("started", 0.0)),
        )


# --------------------------------------------------------------------------- the cluster


class LocalCluster:
    """A local control plane in one directory. start() and stop() are idempotent."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        bin_paths: str | Sequence[str | os.PathLike[str]] | None = None,
        *,
        die_with_parent: bool = False,
        storage_classes: Mapping[str, int] | None = None,
        extra_nodes: int = 0,
        audit_read_users: Sequence[str] = (),
    ) -> None:
        """``extra_nodes`` adds that many amd64 kwok nodes (NODE_ALLOCATABLE each) for runs
        with more pods than the default three hold; ``audit_read_users`` records those
        users' reads too (a benchmark counts them), leaving everyone else's unrecorded."""
        self.dir = Path(directory).resolve()
        self.nodes: tuple[NodeSpec, ...] = NODES + tuple(
            NodeSpec(f"kwok-extra-{i + 1}", "amd64") for i in range(extra_nodes)
        )
        self.audit_read_users = tuple(audit_read_users)
        self._bin_paths = split_paths(bin_paths)
        self.die_with_parent = die_with_parent
        self.storage_classes = dict(storage_classes or STORAGE_CLASSES)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._state: State | None = None

    # Paths -----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = self._read_state()
            if self._state is None:
                raise ClusterError(f"no cluster state in {self.dir}: run `up` first")
        return self._state

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state.ports['apiserver']}"

    @property
    def bin_dirs(self) -> list[Path]:
        """Directories of the binaries the cluster runs (kubectl included)."""
        binaries = self.state.binaries or {}
        dirs: list[Path] = []
        for path in binaries.values():
            parent = Path(path).parent
            if parent not in dirs:
                dirs.append(parent)
        return dirs

    @property
    def kubectl_path(self) -> Path:
        return Path(self.state.binaries["kubectl"])

    def kubectl(self, cache_dir: Path | None = None) -> Kubectl:
        """The cluster's own (pinned) kubectl with the admin kubeconfig."""
        return Kubectl(self.kubectl_path, self.kubeconfig, cache_dir)

    @property
    def api(self) -> Api:
        return Api(
            "127.0.0.1",
            self.state.ports["apiserver"],
            self.pki / "ca.crt",
            self.pki / "admin.crt",
            self.pki / "admin.key",
        )

    # Lifecycle -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> State | None:
        try:
            return State.from_json(self.state_file.read_text())
        except (OSError, ValueError, KeyError):
            return None

    def _alive(self, pid: int) -> bool:
        """Is pid one of our processes (its command line names this directory) and running?"""
        _reap(pid)
        argv = _proc_cmdline(pid)
        if not argv or _proc_state(pid) in (None, "Z", "X"):
            return False
        return self._owns(argv)

    def _owns(self, argv: Sequence[str]) -> bool:
        if Path(argv[0]).name not in COMPONENTS:
            return False
        marker = f"{self.dir}/"
        return any(marker in arg for arg in argv[1:])

    def running_components(self) -> dict[str, bool]:
        state = self._read_state()
        if state is None:
            return {c: False for c in COMPONENTS}
        return {c: c in state.pids and self._alive(state.pids[c]) for c in COMPONENTS}

    def is_running(self) -> bool:
        """All processes alive and the API server ready."""
        if not all(self.running_components().values()):
            return False
        self._state = self._read_state()
        try:
            return self.api.request("GET", "/readyz", timeout=5) == "ok"
        except (OSError, ClusterError):
            return False

    def start(self, timeout: float = 180) -> LocalCluster:
        """Start the cluster and wait until it is healthy; a no-op if it already runs."""
        with self._locked():
            if self.is_running():
                log(f"already running in {self.dir} ({self.server})")
                self.ensure_volumes()
                return self
            if self._read_state() is not None or self._strays():
                log(f"cleaning up a stopped cluster in {self.dir}")
                self._stop_locked()
            for attempt in range(1, 4):
                self._clean()
                try:
                    self._start_locked(timeout)
                    break
                except ComponentExited as exc:
                    self._stop_locked()
                    # A free port can be taken between choosing it and binding it.
                    if attempt == 3 or "address already in use" not in str(exc):
                        log(f"start failed; logs are in {self.logs_dir}")
                        raise
                    log("a port was taken meanwhile; starting again on other ports")
                except BaseException:
                    log(f"start failed; logs are in {self.logs_dir}")
                    self._stop_locked()
                    raise
        return self

    def stop(self, timeout: float = 15) -> None:
        """Stop every process of this cluster: SIGTERM, then SIGKILL after timeout seconds."""
        with self._locked():
            self._stop_locked(timeout)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _clean(self) -> None:
        """Remove what a previous cluster left here (only the paths this module creates)."""
        for name in ("etcd", "pki", "config", "volumes", "kwok-home", "logs"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        for name in ("kubeconfig", "audit.log", "state.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

    def _start_locked(self, timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        bin_paths = self._bin_paths or build_tool_paths()
        binaries = find_binaries(bin_paths)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
        state = State(
            ports=dict(zip(names, free_ports(len(names)), strict=True)),
            binaries={k: str(v) for k, v in binaries.items()},
            started=time.time(),
        )
        self._state = state
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._write_pki(state)
        self._write_config()
        api_port = state.ports["apiserver"]
        log(f"starting {KUBERNETES_VERSION} in {self.dir} (API server on 127.0.0.1:{api_port})")

        def remaining() -> float:
            return max(1.0, deadline - time.monotonic())

        self._spawn("etcd", self._etcd_args(state), state)
        self._spawn("kube-apiserver", self._apiserver_args(state), state)
        wait_for(
            lambda: self._check_running("etcd") and http_ok(state.ports["etcd"], "/health"),
            "etcd",
            remaining(),
        )
        wait_for(
            lambda: (
                self._check_running("kube-apiserver")
                and self.api.request("GET", "/readyz", timeout=5) == "ok"
            ),
            "kube-apiserver /readyz",
            remaining(),
            on_timeout=lambda: self._tail("kube-apiserver"),
        )
        log(f"API server ready after {time.monotonic() - started:.1f}s")
        self._spawn("kube-controller-manager", self._controller_manager_args(state), state)
        self._spawn("kube-scheduler", self._scheduler_args(state), state)
        self._spawn(
            "kwok", self._kwok_args(state), state, env={"HOME": str(self.dir / "kwok-home")}
        )
        self._create_cluster_objects()
        ca = self.pki / "ca.crt"
        for component, port in (
            ("kube-controller-manager", state.ports["controller-manager"]),
            ("kube-scheduler", state.ports["scheduler"]),
        ):
            wait_for(
                lambda c=component, p=port: self._check_running(c) and https_ok(p, "/healthz", ca),
                f"{component} /healthz",
                remaining(),
                on_timeout=lambda c=component: self._tail(c),
            )
        wait_for(
            self._nodes_ready,
            "kwok nodes Ready",
            remaining(),
            on_timeout=lambda: self._tail("kwok"),
        )
        wait_for(
            lambda: self.api.exists("/api/v1/namespaces/default/serviceaccounts/default"),
            "the default ServiceAccount",
            remaining(),
            on_timeout=lambda: self._tail("kube-controller-manager"),
        )
        wait_for(self._volumes_available, "PersistentVolumes Available", remaining())
        log(f"healthy after {time.monotonic() - started:.1f}s; KUBECONFIG={self.kubeconfig}")

    def restart_apiserver(self, down_for: float = 0.0, timeout: float = 60) -> None:
        """Stop kube-apiserver, leave it down ``down_for`` seconds, start it again and wait
        until it is ready: how clients are tested against a restarting control plane."""
        with self._locked():
            state = self.state
            pid = state.pids.get("kube-apiserver")
            if pid and self._alive(pid):
                self._terminate([("kube-apiserver", pid)], timeout=10)
            time.sleep(down_for)
            self._spawn("kube-apiserver", self._apiserver_args(state), state)
            wait_for(
                lambda: (
                    self._check_running("kube-apiserver")
                    and self.api.request("GET", "/readyz", timeout=5) == "ok"
                ),
                "kube-apiserver /readyz after a restart",
                timeout,
                on_timeout=lambda: self._tail("kube-apiserver"),
            )

    def freeze_apiserver(self, seconds: float) -> None:
        """Stop kube-apiserver's processes (SIGSTOP) for ``seconds``, then let them go on:
        its connections stay open and answer nothing, as a hung server's do."""
        pid = self.state.pids["kube-apiserver"]
        _signal_group(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            _signal_group(pid, signal.SIGCONT)

    def _check_running(self, component: str) -> bool:
        child = self._children.get(component)
        if child is not None and child.poll() is not None:
            raise ComponentExited(
                f"{component} exited with status {child.returncode}\n{self._tail(component)}"
            )
        return True

    def _tail(self, component: str, lines: int = 30) -> str:
        try:
            text = self.log_file(component).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log for {component})"
        return f"--- last lines of {self.log_file(component)}:\n" + "\n".join(text)

    def _spawn(
        self, component: str, args: list[str], state: State, env: Mapping[str, str] | None = None
    ) -> None:
        binary = state.binaries[component]
        environment = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        environment.update(env or {})
        with open(self.log_file(component), "ab") as out:
            child = subprocess.Popen(
                [binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=environment,
                start_new_session=True,
                preexec_fn=_parent_death_signal() if self.die_with_parent else None,
            )
        self._children[component] = child
        state.pids[component] = child.pid
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    def _strays(self) -> list[int]:
        """Processes of this cluster not (or no longer) in state.json."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            argv = _proc_cmdline(int(entry.name))
            if argv and self._owns(argv) and _proc_state(int(entry.name)) not in ("Z", "X"):
                found.append(int(entry.name))
        return found

    def _stop_locked(self, timeout: float = 15) -> None:
        """Stop in reverse start order: clients first, then the API server, etcd last.

        The API server drains its requests on SIGTERM, which takes long if etcd went first.
        """
        state = self._read_state()
        tracked: dict[str, int] = {}
        if state is not None:
            tracked = {c: p for c, p in state.pids.items() if c in COMPONENTS and self._alive(p)}
        strays = [p for p in self._strays() if p not in tracked.values()]
        waves: list[list[tuple[str, int]]] = [
            [
                (c, tracked[c])
                for c in ("kwok", "kube-scheduler", "kube-controller-manager")
                if c in tracked
            ]
            + [("stray", p) for p in strays],
            [(c, tracked[c]) for c in ("kube-apiserver",) if c in tracked],
            [(c, tracked[c]) for c in ("etcd",) if c in tracked],
        ]
        stopped = 0
        for index, wave in enumerate(waves):
            if wave:
                # Without etcd the API server cannot drain: do not wait long for it.
                patience = timeout if index != 1 or "etcd" in tracked else min(timeout, 2)
                self._terminate(wave, patience)
                stopped += len(wave)
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._children.clear()
        if stopped:
            log(f"stopped {stopped} processes of {self.dir}")
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self._state = None

    def _terminate(self, processes: Sequence[tuple[str, int]], timeout: float) -> None:
        """SIGTERM each process group, SIGKILL what is still alive after timeout seconds."""
        for _, pid in processes:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._alive(p) for _, p in processes):
            time.sleep(0.05)
        for name, pid in processes:
            if self._alive(pid):
                log(f"{name} (pid {pid}) still running {timeout:.0f}s after SIGTERM: SIGKILL")
                _signal_group(pid, signal.SIGKILL)
        wait_for(
            lambda: not any(self._alive(p) for _, p in processes),
            "processes to exit after SIGKILL",
            10,
        )

    # Configuration ---------------------------------------------------------

    def _write_pki(self, state: State) -> None:
        pki = self.pki
        pki.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create(f"{CLUSTER_NAME}-ca")
        ca_pem = _pem_cert(ca.cert)
        (pki / "ca.crt").write_bytes(ca_pem)
        _write_private(pki / "ca.key", _pem_key(ca.key))

        def save(name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
            (pki / f"{name}.crt").write_bytes(_pem_cert(cert))
            _write_private(pki / f"{name}.key", _pem_key(key))

        save(
            "apiserver",
            *ca.issue(
                "kube-apiserver",
                dns_names=(
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
                ips=("127.0.0.1", first_service_ip()),
                server=True,
            ),
        )
        for name in ("kube-controller-manager", "kube-scheduler"):
            save(
                f"{name}-serving",
                *ca.issue(name, dns_names=("localhost",), ips=("127.0.0.1",), server=True),
            )

        # The aggregation layer's front proxy (as kubeadm sets it up): its CA is published to
        # kube-system/extension-apiserver-authentication, which delegated authentication reads.
        front_proxy = CertificateAuthority.create(f"{CLUSTER_NAME}-front-proxy-ca")
        (pki / "front-proxy-ca.crt").write_bytes(_pem_cert(front_proxy.cert))
        save("front-proxy-client", *front_proxy.issue("front-proxy-client", client=True))

        # Service-account token signing key pair.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki / "sa.key", _pem_key(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        # Client identities: each component its own user, so the audit log tells them apart.
        server = f"https://127.0.0.1:{state.ports['apiserver']}"
        clients = {
            "admin": ("kubernetes-admin", ("system:masters",)),
            "kube-controller-manager": ("system:kube-controller-manager", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
            "kwok": ("kwok-controller", ("system:masters",)),
        }
        for name, (user, groups) in clients.items():
            key, cert = ca.issue(user, organizations=groups, client=True)
            save(name, key, cert)
            document = kubeconfig_document(server, ca_pem, _pem_cert(cert), _pem_key(key), user)
            target = (
                self.kubeconfig if name == "admin" else self.dir / "config" / f"{name}.kubeconfig"
            )
            _write_private(target, document.encode())

    def client_kubeconfig(
        self, user: str, groups: Sequence[str] = (), path: Path | None = None
    ) -> Path:
        """Write a kubeconfig for a client-certificate user of this cluster (for RBAC tests)."""
        ca = CertificateAuthority(
            serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), None),  # type: ignore[arg-type]
            x509.load_pem_x509_certificate((self.pki / "ca.crt").read_bytes()),
        )
        key, cert = ca.issue(user, organizations=groups, client=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        target = path or self.dir / "config" / f"user-{safe}.kubeconfig"
        document = kubeconfig_document(
            self.server, _pem_cert(ca.cert), _pem_cert(cert), _pem_key(key), user
        )
        _write_private(target, document.encode())
        return target

    def _write_config(self) -> None:
        config = self.dir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "audit-policy.yaml").write_text(
            yaml.safe_dump(audit_policy(self.audit_read_users), sort_keys=False)
        )
        shutil.copyfile(KWOK_STAGES, config / "kwok-stages.yaml")
        (self.dir / "kwok-home").mkdir(exist_ok=True)
        self.audit_log.touch()

    def _etcd_args(self, state: State) -> list[str]:
        client = f"http://127.0.0.1:{state.ports['etcd']}"
        peer = f"http://127.0.0.1:{state.ports['etcd-peer']}"
        return [
            "--name=local",
            f"--data-dir={self.dir}/etcd",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--initial-cluster-state=new",
            # Throw-away data: skip fsync, which is slow on a busy shared disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, state: State) -> list[str]:
        pki = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Endpoints may not be loopback addresses, so the `kubernetes` Service gets none
            # (nothing runs in a pod here; clients use the kubeconfig).
            "--endpoint-reconciler-type=none",
            f"--secure-port={state.ports['apiserver']}",
            f"--cert-dir={pki}/apiserver-generated",
            f"--tls-cert-file={pki}/apiserver.crt",
            f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt",
            f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
            f"--proxy-client-key-file={pki}/front-proxy-client.key",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            f"--audit-policy-file={self.dir}/config/audit-policy.yaml",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=0",
            # This plugin taints every new node not-ready until the node lifecycle controller
            # sees it Ready. That controller does not run here (kwok nodes have no liveness to
            # watch), so the taint would stay and keep pods off the nodes.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--profiling=false",
        ]

    def _controller_manager_args(self, state: State) -> list[str]:
        pki = self.pki
        kubeconfig = f"{self.dir}/config/kube-controller-manager.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['controller-manager']}",
            f"--tls-cert-file={pki}/kube-controller-manager-serving.crt",
            f"--tls-private-key-file={pki}/kube-controller-manager-serving.key",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--root-ca-file={pki}/ca.crt",
            f"--service-account-private-key-file={pki}/sa.key",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _scheduler_args(self, state: State) -> list[str]:
        pki = self.pki
        kubeconfig = f"{self.dir}/config/kube-scheduler.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['scheduler']}",
            f"--tls-cert-file={pki}/kube-scheduler-serving.crt",
            f"--tls-private-key-file={pki}/kube-scheduler-serving.key",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _kwok_args(self, state: State) -> list[str]:
        return [
            f"--kubeconfig={self.dir}/config/kwok.kubeconfig",
            f"--config={self.dir}/config/kwok-stages.yaml",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
            f"--cidr={POD_CIDR}",
            # Where the API server would reach a kubelet (logs, exec): nothing listens there.
            "--node-ip=127.0.0.1",
        ]

    # Cluster objects -------------------------------------------------------

    def _create_cluster_objects(self) -> None:
        api = self.api
        for node in self.nodes:
            api.create("/api/v1/nodes", node_manifest(node))
        for index, name in enumerate(self.storage_classes):
            api.create(
                "/apis/storage.k8s.io/v1/storageclasses", storage_class_manifest(name, index == 0)
            )
        self.ensure_volumes()

    def _nodes_ready(self) -> bool:
        nodes = self.api.get("/api/v1/nodes")["items"]
        names = {n["metadata"]["name"] for n in nodes if node_is_ready(n)}
        return all(node.name in names for node in self.nodes)

    def _volumes_available(self) -> bool:
        pvs = self.api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        return bool(pvs) and all(pv.get("status", {}).get("phase") != "Pending" for pv in pvs)

    def ensure_volumes(self) -> int:
        """Create the missing pool volumes and make Released ones Available. Returns created."""
        api = self.api
        self.recycle_volumes()
        existing = {
            pv["metadata"]["name"]
            for pv in api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        }
        wanted = [
            volume_manifest(name, index, self.dir / "volumes")
            for name, count in self.storage_classes.items()
            for index in range(1, count + 1)
        ]
        missing = [pv for pv in wanted if pv["metadata"]["name"] not in existing]
        if missing:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda pv: api.create("/api/v1/persistentvolumes", pv), missing))
        return len(missing)

    @contextlib.contextmanager
    def temporary_namespace(self, name: str, delete_timeout: float = 120) -> Iterator[str]:
        """A fresh namespace whose default ServiceAccount exists (pods need it), deleted
        afterwards, waiting until it is gone; then its volumes are recycled for the next."""
        api = self.api
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            exist_ok=False,
        )
        wait_for(
            lambda: api.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            f"the default ServiceAccount of namespace {name}",
            timeout=60,
        )
        yield name
        api.delete(f"/api/v1/namespaces/{name}")
        wait_for(
            lambda: not api.exists(f"/api/v1/namespaces/{name}"),
            f"namespace {name} to be deleted",
            timeout=delete_timeout,
            interval=0.5,
            on_timeout=lambda: self._namespace_leftovers(name),
        )
        self.recycle_volumes()

    def _namespace_leftovers(self, name: str) -> str:
        try:
            status = self.api.get(f"/api/v1/namespaces/{name}").get("status", {})
        except ApiError as exc:
            return str(exc)
        return f"namespace status: {json.dumps(status)}"

    def recycle_volumes(self) -> list[str]:
        """Make pool volumes whose claim is gone Available again (clear spec.claimRef).

        Covers volumes the PV controller already marked Released and those whose claim was
        deleted but not yet noticed. Returns the names of the recycled volumes.
        """
        api = self.api
        recycled = []
        pvs = api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        for pv in pvs:
            claim = pv.get("spec", {}).get("claimRef")
            if not claim:
                continue
            phase = pv.get("status", {}).get("phase")
            if phase != "Released":
                if not claim.get("uid"):
                    continue  # pre-bound or being bound: not ours to touch
                namespace, claim_name = claim["namespace"], claim["name"]
                path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim_name}"
                try:
                    live = api.get(path)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    live = None
                if live is not None and live["metadata"]["uid"] == claim["uid"]:
                    continue  # still in use
            name = pv["metadata"]["name"]
            patch = {
                "metadata": {"resourceVersion": pv["metadata"]["resourceVersion"]},
                "spec": {"claimRef": None},
            }
            try:
                api.merge_patch(f"/api/v1/persistentvolumes/{name}", patch)
            except ApiError as exc:
                if exc.status in (404, 409):
                    continue  # changed meanwhile; the next call looks again
                raise
            recycled.append(name)
        return recycled

    # Shell -----------------------------------------------------------------

    def env_lines(self, path: Sequence[Path] | None = None) -> list[str]:
        lines = [f"export KUBECONFIG={_shell_quote(str(self.kubeconfig))}"]
        if path:
            joined = os.pathsep.join(str(p) for p in path)
            lines.append(f'export PATH={_shell_quote(joined)}"{os.pathsep}$PATH"')
        return lines


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def node_is_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_manifest(node: NodeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": node.arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": node.name,
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": dict(NODE_ALLOCATABLE),
            "capacity": dict(NODE_ALLOCATABLE),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {
                "architecture": node.arch,
                "operatingSystem": "linux",
                "kubeletVersion": KUBERNETES_VERSION,
                "bootID": "",
                "containerRuntimeVersion": "",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "osImage": "",
                "systemUUID": "",
            },
        },
    }


def storage_class_manifest(name: str, default: bool) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": "kubernetes.io/no-provisioner",
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": False,
    }


def volume_manifest(storage_class: str, index: int, root: Path) -> dict[str, Any]:
    name = f"pv-{storage_class}-{index:03d}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {VOLUME_LABEL: storage_class}},
        "spec": {
            "capacity": {"storage": VOLUME_SIZE},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "volumeMode": "Filesystem",
            "hostPath": {"path": str(root / name), "type": "DirectoryOrCreate"},
        },
    }


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", required=True, help="cluster directory (state, logs, kubeconfig)")
        return p

    up = add("up", "start the cluster (no-op if it runs) and wait until it is healthy")
    up.add_argument(
        "--bin-path",
        help="colon-separated directories holding the binaries "
        "(default: build or reuse them with hack/build-tools.sh)",
    )
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for health")
    up.add_argument(
        "--extra-nodes",
        type=int,
        default=0,
        help=f"more amd64 kwok nodes, {NODE_ALLOCATABLE['pods']} pods each",
    )
    add("down", "stop every process of the cluster")
    env = add("env", "print export lines for a POSIX shell")
    env.add_argument("--path", help="colon-separated directories to put first on PATH")
    add("status", "show the state of each process")
    add("recycle", "make Released pool volumes Available again")

    args = parser.parse_args(argv)
    cluster = LocalCluster(
        args.dir, getattr(args, "bin_path", None), extra_nodes=getattr(args, "extra_nodes", 0)
    )
    try:
        if args.command == "up":
            began = time.monotonic()
            cluster.start(timeout=args.timeout)
            log(f"up in {time.monotonic() - began:.1f}s")
        elif args.command == "down":
            cluster.stop()
        elif args.command == "env":
            if cluster._read_state() is None:
                raise ClusterError(f"no cluster in {cluster.dir}: run `up` first")
            print("\n".join(cluster.env_lines(split_paths(args.path))))
        elif args.command == "status":
            running = cluster.running_components()
            for component, alive in running.items():
                print(f"{component:<24} {'running' if alive else 'stopped'}")
            print(f"{'api server':<24} {'ready' if cluster.is_running() else 'not ready'}")
            return 0 if cluster.is_running() else 1
        elif args.command == "recycle":
            recycled = cluster.recycle_volumes()
            log(f"recycled {len(recycled)} volumes")
    except ClusterError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
