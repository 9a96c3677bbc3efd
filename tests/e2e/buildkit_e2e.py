"""Run the buildkitd that ``buildkit-operator render`` describes, for real, on this machine.

The rendered Deployment is the specification: its container args, volume mounts and volumes
say which files buildkitd sees where. ``Daemon`` writes the ConfigMap and Secret volumes to a
temporary directory, maps every in-container path (the mounts and ``/run``) to a host path,
moves the TCP listener from ``0.0.0.0:1234`` to a free loopback port, and starts buildkitd with
the args otherwise unchanged: as root for a rootful Builder (the ``buildkitd`` entrypoint), or
as uid 1000 under ``rootlesskit buildkitd`` for a rootless one, as the moby/buildkit images do.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]
OPERATOR_CLI = REPO / ".venv" / "bin" / "buildkit-operator"

CONTAINER_PORT = 1234
ROOTLESS_UID = 1000
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
BUILD_TIMEOUT = 600.0
CLIENT_TIMEOUT = 60.0


class HarnessError(Exception):
    """The harness could not do what a test asked; the message says what and why."""


# --------------------------------------------------------------------------- rendering


def builder_manifest(name: str, spec: Mapping[str, Any], namespace: str = "e2e") -> dict[str, Any]:
    return {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


@dataclasses.dataclass(frozen=True)
class Rendered:
    """The objects ``buildkit-operator render`` printed for one Builder."""

    name: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        if len(found) != 1:
            names = [o["metadata"]["name"] for o in self.of_kind(kind)]
            raise HarnessError(f"expected one {kind} {name or ''} in the render, found {names}")
        return found[0]

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment")

    def container(self, daemon: int = 0) -> dict[str, Any]:
        pod = self.deployments[daemon]["spec"]["template"]["spec"]
        containers = [c for c in pod["containers"] if c["name"] == "buildkitd"]
        if len(containers) != 1:
            raise HarnessError(f"no container named buildkitd in {self.deployments[daemon]}")
        container: dict[str, Any] = containers[0]
        return container

    def config_toml(self) -> str:
        (config_map,) = self.of_kind("ConfigMap")
        return str(config_map["data"]["buildkitd.toml"])

    def secret_data(self, suffix: str) -> dict[str, bytes]:
        """Decoded data of the Secret named ``<base>-<suffix>`` (ca, server-tls, client-tls)."""
        matches = [s for s in self.of_kind("Secret") if s["metadata"]["name"].endswith(suffix)]
        if len(matches) != 1:
            names = [s["metadata"]["name"] for s in self.of_kind("Secret")]
            raise HarnessError(f"expected one Secret named *{suffix}, found {names}")
        return {k: base64.b64decode(v) for k, v in matches[0]["data"].items()}

    def client_certs(self, into: Path) -> ClientCerts:
        """The client Secret's files, as `buildkit-operator connect` would write them; without
        one (tls.sharedClientCertificate: false) a certificate signed by the Builder's client CA,
        as the operator keeps one for itself in memory."""
        if any(s["metadata"]["name"].endswith("-client-tls") for s in self.of_kind("Secret")):
            return write_certs(self.secret_data("-client-tls"), into)
        from datetime import UTC, datetime, timedelta

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from buildkit_operator.pki.client_csr import (
            certificate_pem,
            load_client_issuer,
            sign_client,
        )

        key = ec.generate_private_key(ec.SECP256R1())
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        ca = self.secret_data("-ca")
        cert = sign_client(
            request.public_bytes(serialization.Encoding.PEM),
            username="e2e-harness",
            groups=[],
            ca=load_client_issuer(ca),
            now=datetime.now(UTC),
            validity=timedelta(hours=8),
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        data = {"ca.pem": ca["ca.pem"], "cert.pem": certificate_pem(cert), "key.pem": key_pem}
        return write_certs(data, into)


def render(manifests: Sequence[Mapping[str, Any]], workdir: Path) -> dict[str, Rendered]:
    """Run the real CLI on the Builders and split its output by Builder (label)."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "builders.yaml"
    source.write_text(yaml.safe_dump_all(list(manifests), sort_keys=False))
    result = subprocess.run(
        [str(OPERATOR_CLI), "render", "-f", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise HarnessError(
            f"buildkit-operator render failed ({result.returncode}): {result.stderr.strip()}"
        )
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    (workdir / "rendered.yaml").write_text(result.stdout)
    out: dict[str, Rendered] = {}
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        mine = [
            o
            for o in objects
            if (o["metadata"].get("labels") or {}).get("buildkit.dev/builder") == name
            or any(ref.get("name") == name for ref in o["metadata"].get("ownerReferences") or [])
        ]
        if not mine:
            raise HarnessError(f"render printed no object for Builder {name}")
        out[name] = Rendered(name, mine)
    return out


# --------------------------------------------------------------------------- TLS files


@dataclasses.dataclass(frozen=True)
class ClientCerts:
    ca: Path
    cert: Path | None
    key: Path | None


def write_certs(data: Mapping[str, bytes], into: Path) -> ClientCerts:
    into.mkdir(parents=True, exist_ok=True)
    for key, value in data.items():
        (into / key).write_bytes(value)
        (into / key).chmod(0o600)
    return ClientCerts(
        ca=into / "ca.pem",
        cert=into / "cert.pem" if "cert.pem" in data else None,
        key=into / "key.pem" if "key.pem" in data else None,
    )


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def short_tempdir(prefix: str) -> Path:
    """A temporary directory with a short path: unix socket paths must fit in 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def remove_tree(path: Path) -> None:
    """Remove a daemon's state directory, unmounting anything buildkitd left mounted."""
    if not path.exists():
        return
    with contextlib.suppress(OSError):
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path) + "/")
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@dataclasses.dataclass
class BuildResult:
    returncode: int
    output: str  # buildctl's stdout and its --progress=plain output (stderr)
    seconds: float

    def steps(self) -> dict[str, bool]:
        """Dockerfile steps ('[2/3] COPY ...') of the plain progress, and whether each was
        CACHED."""
        names: dict[str, str] = {}
        cached: set[str] = set()
        for line in self.output.splitlines():
            match = re.match(r"^#(\d+) (.*)$", line)
            if not match:
                continue
            vertex, text = match.groups()
            if text == "CACHED":
                cached.add(vertex)
            elif vertex not in names and re.match(r"^\[[^\]]*\d+/\d+\] ", text):
                names[vertex] = text
        return {name: vertex in cached for vertex, name in names.items()}


class Buildctl:
    """buildctl pointed at one daemon's TCP listener with some client certificates."""

    def __init__(
        self,
        binary: Path,
        address: str,
        certs: ClientCerts | None,
        server_name: str | None = "localhost",
    ) -> None:
        self.binary = binary
        self.address = address
        self.certs = certs
        self.server_name = server_name

    def global_args(self) -> list[str]:
        args = [str(self.binary), "--addr", self.address, "--timeout", "20"]
        if self.certs is not None:
            args += ["--tlscacert", str(self.certs.ca)]
            if self.certs.cert is not None and self.certs.key is not None:
                args += ["--tlscert", str(self.certs.cert), "--tlskey", str(self.certs.key)]
            if self.server_name:
                args += ["--tlsservername", self.server_name]
        return args

    def run(
        self, *args: str, timeout: float = CLIENT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [*self.global_args(), *args]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise HarnessError(f"{' '.join(command)} did not finish in {timeout:.0f}s") from err
        if check and result.returncode != 0:
            raise HarnessError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr.strip()}"
            )
        return result

    def refusals(
        self, attempts: int = 6, explained_by: Sequence[str] = ("tls:", "x509:")
    ) -> list[str]:
        """Errors of `debug workers` calls, each of which must fail; stops at the first error
        that names its TLS cause. A client refused in a TLS 1.3 handshake may see the server's
        alert (`remote error: tls: ...`) or, when it writes first, only `broken pipe`."""
        errors = []
        for _ in range(attempts):
            result = self.run("debug", "workers", check=False)
            if result.returncode == 0:
                raise HarnessError(f"the daemon served this client:\n{result.stdout}")
            errors.append(result.stderr.strip())
            if any(word in errors[-1] for word in explained_by):
                break
        return errors

    @staticmethod
    def telling(errors: Sequence[str]) -> str:
        """The refusal that names its cause, if any did."""
        return next((e for e in errors if "tls:" in e or "x509:" in e), errors[-1])

    def build(
        self,
        context: Path,
        output: str,
        *,
        opts: Mapping[str, str] | None = None,
        locals_: Mapping[str, Path] | None = None,
        check: bool = True,
        extra: Sequence[str] = (),
    ) -> BuildResult:
        """The built-in Dockerfile frontend on ``context`` (its Dockerfile inside); ``extra``
        are further `buildctl build` flags (``--export-cache``, ``--metadata-file``)."""
        args = [
            "build",
            "--progress=plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={context}",
            "--local",
            f"dockerfile={context}",
            "--output",
            output,
        ]
        for key, value in (opts or {}).items():
            args += ["--opt", f"{key}={value}"]
        for key, path in (locals_ or {}).items():
            args += ["--local", f"{key}={path}"]
        args += extra
        start = time.monotonic()
        command = [*self.global_args(), *args]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise HarnessError(f"build did not finish in {BUILD_TIMEOUT:.0f}s") from err
        build = BuildResult(result.returncode, result.stdout + result.stderr, 0.0)
        build.seconds = time.monotonic() - start
        if check and result.returncode != 0:
            raise HarnessError(f"build failed ({result.returncode}):\n{build.output[-6000:]}")
        return build


@dataclasses.dataclass(frozen=True)
class DaemonLayout:
    """Where the in-container paths of one daemon live on the host."""

    base: Path  # everything of this daemon: mounts, /run, home, logs
    state: Path  # the cache volume (buildkitd --root); survives restarts of the daemon


class Daemon:
    """buildkitd as the rendered Deployment runs it (one daemon of a Builder)."""

    def __init__(
        self,
        rendered: Rendered,
        bin_dir: Path,
        *,
        daemon: int = 0,
        layout: DaemonLayout | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.rendered = rendered
        self.bin_dir = bin_dir
        self.container = rendered.container(daemon)
        pod = rendered.deployments[daemon]["spec"]["template"]["spec"]
        self.pod = pod
        self.rootless = "--oci-worker-no-process-sandbox" in self.container.get("args", [])
        if layout is None:
            base = short_tempdir("bke2e-")
            layout = DaemonLayout(base=base, state=base / "cache")
        self.layout = layout
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = layout.base / f"buildkitd-{self.port}.log"
        self.paths: dict[str, Path] = {}
        self.args: list[str] = []

    # -- files

    def _volume_files(self, volume: Mapping[str, Any]) -> dict[str, bytes]:
        """The files a configMap or secret volume shows: every key, or the listed items."""
        if "configMap" in volume:
            source = volume["configMap"]
            obj = self.rendered.one("ConfigMap", source["name"])
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        elif "secret" in volume:
            source = volume["secret"]
            obj = self.rendered.one("Secret", source["secretName"])
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            raise HarnessError(f"not a configMap or secret volume: {volume}")
        if "items" in source:
            return {item["path"]: data[item["key"]] for item in source["items"]}
        return data

    def _prepare(self) -> None:
        """Materialise the pod's volumes and build the host-path map for its mounts."""
        base = self.layout.base
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        group = (self.pod.get("securityContext") or {}).get("fsGroup")
        paths: dict[str, Path] = {}
        cache_mounts = 0
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume or "emptyDir" in volume:
                cache_mounts += 1
                if cache_mounts > 1:
                    raise HarnessError(f"more than one writable volume mounted: {mount}")
                host = self.layout.state
                host.mkdir(parents=True, exist_ok=True)
                if group is not None:
                    # What the kubelet does to a volume for fsGroup: group-owned, setgid,
                    # group-writable; the owner stays root.
                    os.chown(host, 0, group)
                    host.chmod(0o2775)
                else:
                    host.chmod(0o755)
            else:
                host = base / "volumes" / mount["name"]
                host.mkdir(parents=True, exist_ok=True)
                mode = (volume.get("secret") or volume.get("configMap") or {}).get(
                    "defaultMode", 0o644
                )
                for rel, content in self._volume_files(volume).items():
                    target = host / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                    target.chmod(mode)
                    # Kubernetes gives fsGroup group ownership of the volume's files.
                    if group is not None:
                        os.chown(target, 0, group)
                if group is not None:
                    os.chown(host, 0, group)
                host.chmod(0o755)
            paths[mount["mountPath"].rstrip("/")] = host
        run = base / "run"
        run.mkdir(parents=True, exist_ok=True)
        paths["/run"] = run
        if self.rootless:
            home = base / "home"
            runtime = run / "user" / str(ROOTLESS_UID)
            for d in (home, home / ".local" / "tmp", runtime):
                d.mkdir(parents=True, exist_ok=True)
            for d in (home, home / ".local", home / ".local" / "tmp", run / "user", runtime):
                os.chown(d, ROOTLESS_UID, ROOTLESS_UID)
            runtime.chmod(0o700)
            # The cache mount is more specific than /home/user, so it still wins below.
            paths.setdefault("/home/user", home)
        base.chmod(0o755)
        self.paths = paths

    def host_path(self, container_path: str) -> str:
        """The host path of an in-container path (longest matching mount wins)."""
        for prefix in sorted(self.paths, key=len, reverse=True):
            if container_path == prefix or container_path.startswith(prefix + "/"):
                return str(self.paths[prefix]) + container_path[len(prefix) :]
        return container_path

    def _map_arg(self, arg: str) -> str:
        if arg == f"tcp://0.0.0.0:{CONTAINER_PORT}":
            return self.address
        if arg.startswith("unix://"):
            return "unix://" + self.host_path(arg[len("unix://") :])
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            return f"{flag}={self._map_arg(value)}"
        if arg.startswith("/"):
            return self.host_path(arg)
        return arg

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The container's entrypoint and mapped args, and its environment."""
        if "command" in self.container:
            raise HarnessError(
                f"the buildkitd container sets command {self.container['command']}; the harness "
                "runs the image entrypoint and expects only args"
            )
        args = [self._map_arg(a) for a in self.container.get("args", [])] + self.extra_args
        if f"tcp://0.0.0.0:{CONTAINER_PORT}" not in self.container.get("args", []):
            raise HarnessError(f"no tcp://0.0.0.0:{CONTAINER_PORT} listener in the args: {args}")
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        }
        if not self.rootless:
            return [str(self.bin_dir / "buildkitd"), *args], env
        home = self.host_path("/home/user")
        env.update(
            HOME=home,
            USER="user",
            XDG_RUNTIME_DIR=self.host_path(f"/run/user/{ROOTLESS_UID}"),
            TMPDIR=self.host_path("/home/user/.local/tmp"),
        )
        entrypoint = [
            "setpriv",
            f"--reuid={ROOTLESS_UID}",
            f"--regid={ROOTLESS_UID}",
            "--clear-groups",
            "--",
            "rootlesskit",
            "buildkitd",
        ]
        return [*entrypoint, *args], env

    # -- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> Daemon:
        self._prepare()
        command, env = self.command()
        self.args = command
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.layout.base,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def client(self, certs: ClientCerts | None = None, server_name: str = "localhost") -> Buildctl:
        if certs is None:
            certs = self.rendered.client_certs(self.layout.base / "client")
        return Buildctl(self.bin_dir / "buildctl", self.address, certs, server_name)

    def run_probe(self, kind: str = "readinessProbe") -> subprocess.CompletedProcess[str]:
        """The container's exec probe, as the kubelet runs it: the container's user, the
        in-container paths mapped like the daemon's."""
        probe = self.container.get(kind) or {}
        if "exec" not in probe:
            raise HarnessError(f"the buildkitd container has no exec {kind}: {probe}")
        command = [self._map_arg(a) for a in probe["exec"]["command"]]
        return self._run_in_container(command, timeout=probe.get("timeoutSeconds", 10) + 20)

    def run_pre_stop(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The container's preStop hook (a shell script), as the kubelet runs it."""
        hook = ((self.container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
        if not hook:
            raise HarnessError(f"the buildkitd container has no exec preStop hook: {hook}")
        command = [
            re.sub(r"unix://\S+", lambda m: self._map_arg(m.group(0)), a) for a in hook["command"]
        ]
        return self._run_in_container(command, timeout=timeout)

    def _run_in_container(
        self, command: list[str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``command`` as the container's user, with the image's buildctl."""
        command = [str(self.bin_dir / a) if a == "buildctl" else a for a in command]
        user = (self.container.get("securityContext") or {}).get("runAsUser")
        if user is not None:
            group = (self.container.get("securityContext") or {}).get("runAsGroup", user)
            setpriv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--"]
            command = [*setpriv, *command]
        _, env = self.command()
        env = {**env, "PATH": f"{self.bin_dir}:{env.get('PATH', os.defpath)}"}
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )

    def plaintext_client(self) -> Buildctl:
        """buildctl without TLS at all."""
        return Buildctl(self.bin_dir / "buildctl", self.address, None, None)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last = ""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise HarnessError(f"buildkitd exited with status {code}:\n{self.log_tail()}")
            result = client.run("debug", "workers", check=False, timeout=30)
            if result.returncode == 0 and len(result.stdout.strip().splitlines()) > 1:
                return
            last = result.stderr.strip()
            time.sleep(0.5)
        raise HarnessError(
            f"buildkitd did not serve `buildctl debug workers` within {timeout:.0f}s "
            f"(last error: {last}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"buildkitd {process.pid} ignored SIGTERM for {timeout:.0f}s", file=sys.stderr)
        # rootlesskit's children and anything they started share the session's process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def tls_handshake(address: str, certs: ClientCerts, server_name: str = "localhost") -> str:
    """Speak TLS (OpenSSL, through Python's ssl) to a daemon's TCP listener with exactly these
    client certificates and read what the server sends first. Returns "ok" when the server
    speaks HTTP/2, else the TLS error. Unlike Go's client, OpenSSL presents the configured
    certificate even when the server asks for another issuer, so the server's own check of
    the chain is what decides."""
    import ssl

    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(certs.ca))
    if certs.cert is not None and certs.key is not None:
        context.load_cert_chain(str(certs.cert), str(certs.key))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=20) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                # An HTTP/2 server speaks first (its SETTINGS frame) once the handshake is done.
                reply = tls.recv(64)
                return "ok" if reply else "connection closed"
        except (ssl.SSLError, ConnectionError) as err:
            return f"{type(err).__name__}: {err}"


RenderBuilders = Callable[[Mapping[str, Mapping[str, Any]]], dict[str, Rendered]]


class DaemonPool:
    """Starts daemons and guarantees each is stopped, and its files removed, at teardown."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.daemons: list[Daemon] = []
        self.dirs: list[Path] = []
        self._rootless_bin: Path | None = None

    def layout(self) -> DaemonLayout:
        """Directories for a daemon; pass the same layout again to restart on the same cache."""
        base = short_tempdir("bke2e-")
        self.dirs.append(base)
        return DaemonLayout(base=base, state=base / "cache")

    def rootless_bin(self) -> Path:
        """A copy of the binaries uid 1000 can execute (the build cache under /root is not)."""
        if self._rootless_bin is None:
            target = short_tempdir("bke2e-bin-")
            self.dirs.append(target)
            for program in ("buildkitd", "buildctl"):
                shutil.copy2(self.bin_dir / program, target / program)
            target.chmod(0o755)
            self._rootless_bin = target
        return self._rootless_bin

    def start(
        self,
        rendered: Rendered,
        *,
        layout: DaemonLayout | None = None,
        daemon: int = 0,
        extra_args: Sequence[str] = (),
    ) -> Daemon:
        rootless = "--oci-worker-no-process-sandbox" in rendered.container(daemon).get("args", [])
        bin_dir = self.rootless_bin() if rootless else self.bin_dir
        instance = Daemon(
            rendered,
            bin_dir,
            daemon=daemon,
            layout=layout or self.layout(),
            extra_args=extra_args,
        )
        self.daemons.append(instance)
        print(f"e2e: starting buildkitd for {rendered.name} on {instance.address}", file=sys.stderr)
        instance.start()
        print(f"e2e: {' '.join(instance.args)}", file=sys.stderr)
        return instance

    def close(self) -> None:
        errors = []
        for instance in reversed(self.daemons):
            try:
                instance.stop()
            except Exception as err:
                errors.append(f"{instance.address}: {err}")
        for d in self.dirs:
            remove_tree(d)
        if errors:
            raise HarnessError("stopping buildkitd failed: " + "; ".join(errors))


# --------------------------------------------------------------------------- build inputs


def write_context(directory: Path, dockerfile: str, files: Mapping[str, bytes | str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    for rel, content in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    return directory


HOST_PROGRAMS = ("sh", "cat", "date", "sleep", "echo", "mkdir", "sha256sum", "ls")


def host_rootfs(directory: Path, programs: Sequence[str] = HOST_PROGRAMS) -> Path:
    """A minimal root filesystem made of this machine's own programs and their shared
    libraries, for RUN steps without a registry."""
    directory.mkdir(parents=True, exist_ok=True)
    needed: set[Path] = set()
    for program in programs:
        found = shutil.which(program)
        if found is None:
            raise HarnessError(f"{program} not found on this machine")
        path = Path(found).resolve()
        (directory / "bin").mkdir(exist_ok=True)
        shutil.copy2(path, directory / "bin" / program)
        ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for match in re.finditer(r"(/\S+\.so[.\d]*)", ldd.stdout):
            needed.add(Path(match.group(1)))
    for lib in needed:
        target = directory / lib.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib.resolve(), target)
    for d in ("tmp", "etc", "proc", "dev", "sys"):
        (directory / d).mkdir(exist_ok=True)
    (directory / "tmp").chmod(0o1777)
    return directory


# A build that runs programs in containers: the base image is this machine's programs, passed
# as the named context "rootfs" and copied into a stage (RUN directly on a local context would
# never hit the cache: BuildKit keys a local source by its client session, a COPY of it by
# content). The loop makes the cold build take measurable CPU time.
RUN_DOCKERFILE = """\
FROM scratch AS base
COPY --from=rootfs / /

FROM base AS work
RUN i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; echo "$i" > /count
COPY input.txt /input.txt
RUN sha256sum /input.txt > /input.sha256

FROM scratch
COPY --from=work /count /input.sha256 /out/
COPY input.txt /out/input.txt
"""


@dataclasses.dataclass(frozen=True)
class RunBuild:
    context: Path
    opts: dict[str, str]
    locals_: dict[str, Path]
    input_text: str
    loops: int


def run_build_inputs(directory: Path, input_text: str, loops: int = 2_000_000) -> RunBuild:
    rootfs = host_rootfs(directory / "rootfs")
    context = write_context(
        directory / "context", RUN_DOCKERFILE.format(loops=loops), {"input.txt": input_text}
    )
    return RunBuild(
        context=context,
        opts={"context:rootfs": "local:rootfs"},
        locals_={"rootfs": rootfs},
        input_text=input_text,
        loops=loops,
    )


def check_run_output(files: Mapping[str, bytes], inputs: RunBuild) -> None:
    """The files the RUN steps wrote: proof the worker executed them."""
    digest = hashlib.sha256(inputs.input_text.encode()).hexdigest()
    assert files["/out/count"] == f"{inputs.loops}\n".encode(), files.get("/out/count")
    assert files["/out/input.sha256"] == f"{digest}  /input.txt\n".encode()
    assert files["/out/input.txt"] == inputs.input_text.encode()


# --------------------------------------------------------------------------- OCI images


def _tar_json(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        raise HarnessError(f"{name} missing from the OCI tarball")
    return json.loads(member.read())


def oci_image_files(tarball: Path) -> dict[str, bytes]:
    """Regular files of the image in an OCI layout tarball, all layers applied in order:
    index.json -> (index ->) manifest -> layers."""
    files: dict[str, bytes] = {}
    with tarfile.open(tarball) as tar:
        index = _tar_json(tar, "index.json")
        descriptor = index["manifests"][0]
        blob = f"blobs/{descriptor['digest'].replace(':', '/')}"
        manifest = _tar_json(tar, blob)
        while manifest.get("mediaType", "").endswith("image.index.v1+json") or "manifests" in (
            manifest
        ):
            blob = f"blobs/{manifest['manifests'][0]['digest'].replace(':', '/')}"
            manifest = _tar_json(tar, blob)
        for layer in manifest["layers"]:
            member = tar.extractfile(f"blobs/{layer['digest'].replace(':', '/')}")
            if member is None:
                raise HarnessError(f"layer {layer['digest']} missing from the OCI tarball")
            data = member.read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as layer_tar:
                for entry in layer_tar:
                    name = "/" + entry.name.lstrip("./").lstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        files.pop(name.replace(".wh.", "", 1), None)
                        continue
                    if entry.isfile():
                        extracted = layer_tar.extractfile(entry)
                        files[name] = extracted.read() if extracted else b""
    return files


# --------------------------------------------------------------------------- worker info

_SI = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}


def parse_size(text: str) -> float:
    """A size as `buildctl debug workers -v` prints it (decimal units: 8.05306368GB)."""
    match = re.fullmatch(r"([\d.e+]+)\s*([kKMGTP]?B)", text.strip())
    if not match:
        raise HarnessError(f"not a size: {text!r}")
    return float(match.group(1)) * _SI[match.group(2)]


@dataclasses.dataclass
class WorkerInfo:
    platforms: list[str]
    labels: dict[str, str]
    gc_rules: list[dict[str, str]]


def parse_workers_verbose(text: str) -> list[WorkerInfo]:
    """`buildctl debug workers -v`: one block per worker, starting with `ID:`."""
    workers: list[WorkerInfo] = []
    section = ""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        key, _, value = raw.strip().partition(":")
        value = value.strip()
        if not raw.startswith((" ", "\t")):
            section = key
            if key == "ID":
                workers.append(WorkerInfo([], {}, []))
            elif key == "Platforms":
                workers[-1].platforms = value.split(",")
            elif key.startswith("GC Policy rule"):
                workers[-1].gc_rules.append({})
            continue
        if section == "Labels":
            workers[-1].labels[key] = value
        elif section.startswith("GC Policy rule"):
            workers[-1].gc_rules[-1][key] = value
    return workers


# --------------------------------------------------------------------------- a tiny registry


@dataclasses.dataclass
class RegistryImage:
    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + _sha256(self.manifest)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_from_rootfs(rootfs: Path) -> RegistryImage:
    """A single-layer linux/amd64 OCI image of a directory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _sha256(layer_tar)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + _sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + _sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return RegistryImage(
        manifest=manifest,
        blobs={"sha256:" + _sha256(config): config, "sha256:" + _sha256(layer): layer},
    )


class NetnsUnavailable(Exception):
    """This process cannot create network namespaces; the message says why."""


CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21  # `ip netns add` bind-mounts the namespace under /run/netns
BENCHMARK_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544, never routed


def netns_unavailable() -> str | None:
    """Why this process cannot create network namespaces, or None when it seems able to."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", status, re.MULTILINE)
    effective = int(match.group(1), 16) if match else 0
    missing = [
        name
        for name, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
        if not effective & (1 << bit)
    ]
    if missing:
        return (
            f"creating a network namespace needs {' and '.join(missing)}, which this process "
            f"(uid {os.geteuid()}) does not have; run the e2e tests as root, in a container "
            "with those capabilities"
        )
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as err:
        raise NetnsUnavailable("ip (iproute2) is not installed") from err
    if check and result.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this namespace's addresses and routes."""
    found = []
    lines = _ip("-4", "-o", "addr", "show").stdout.splitlines()
    words = [line.split() for line in lines]
    cidrs = [w[w.index("inet") + 1] for w in words if "inet" in w]
    cidrs += [line.split()[0] for line in _ip("-4", "route", "show").stdout.splitlines()]
    for cidr in cidrs:
        with contextlib.suppress(ValueError):
            found.append(ipaddress.IPv4Network("0.0.0.0/0" if cidr == "default" else cidr, False))
    return found


class IsolatedNetwork:
    """A network namespace of the test's own, joined to this one by a veth pair on a /30 of
    198.18.0.0/15: this side is ``host_address``, the namespace side ``inner_address``.

    The name and addresses are chosen when the object is made, so they can be configured
    before anything exists; ``create()`` (or ``with``) makes the namespace and the link,
    ``destroy()`` removes both and checks that nothing is left."""

    def __init__(self) -> None:
        token = secrets.token_hex(4)
        self.name = f"bko-e2e-{token}"
        self.host_link = f"bko{token}h"  # interface names: at most 15 bytes
        self.inner_link = f"bko{token}n"
        self.subnet = self._free_subnet()
        self.host_address = str(self.subnet[1])
        self.inner_address = str(self.subnet[2])
        self.made: list[str] = []  # "netns", "link": what destroy() has to remove

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        """A random /30 of the benchmarking range that nothing here uses yet."""
        try:
            used = [n for n in _used_ipv4_networks() if n.prefixlen > 0]
        except NetnsUnavailable:
            used = []  # create() will say so
        count = BENCHMARK_NET.num_addresses // 4
        for _ in range(100):
            offset = 4 * secrets.randbelow(count)
            subnet = ipaddress.IPv4Network((int(BENCHMARK_NET.network_address) + offset, 30))
            if not any(subnet.overlaps(n) for n in used):
                return subnet
        raise HarnessError(f"no free /30 in {BENCHMARK_NET}: {used}")

    def exec_prefix(self) -> list[str]:
        """Prefix of a command that runs inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        """Make the namespace and the link; raises NetnsUnavailable when this process may not
        make namespaces. On any failure, whatever was made is removed again."""
        reason = netns_unavailable()
        if reason is not None:
            raise NetnsUnavailable(reason)
        added = _ip("netns", "add", self.name, check=False)
        if added.returncode != 0:
            raise NetnsUnavailable(f"ip netns add {self.name} failed: {added.stderr.strip()}")
        self.made.append("netns")
        bits = self.subnet.prefixlen
        steps = [
            f"link add {self.host_link} type veth peer name {self.inner_link} netns {self.name}",
            f"addr add {self.host_address}/{bits} dev {self.host_link}",
            f"link set {self.host_link} up",
            f"-n {self.name} addr add {self.inner_address}/{bits} dev {self.inner_link}",
            f"-n {self.name} link set {self.inner_link} up",
            f"-n {self.name} link set lo up",
        ]
        try:
            for step in steps:
                _ip(*step.split())
                if step.startswith("link add"):
                    self.made.append("link")
        except BaseException as err:
            try:
                self.destroy()
            except Exception as cleanup:
                err.add_note(f"removing the half-made network failed too: {cleanup}")
            raise
        print(
            f"e2e: network namespace {self.name}: {self.host_link} {self.host_address} <-> "
            f"{self.inner_link} {self.inner_address}",
            file=sys.stderr,
        )

    def leftovers(self) -> list[str]:
        """What this object made that still exists."""
        left = []
        if "netns" in self.made and self.name in _ip("netns", "list").stdout.split():
            left.append(f"network namespace {self.name}")
        if "link" in self.made and _ip("link", "show", self.host_link, check=False).returncode == 0:
            left.append(f"link {self.host_link}")
        return left

    def destroy(self, timeout: float = 10.0) -> None:
        """Remove the link and the namespace (stop every process inside first: a namespace
        lives on while a process is in it) and check that both are gone."""
        if not self.made:
            return
        # Deleting one end of a veth pair deletes the other.
        if "link" in self.made:
            _ip("link", "del", self.host_link, check=False)
        if "netns" in self.made:
            _ip("netns", "del", self.name, check=False)
        deadline = time.monotonic() + timeout
        while left := self.leftovers():
            if time.monotonic() > deadline:
                raise HarnessError(f"still present after teardown: {', '.join(left)}")
            time.sleep(0.1)
        self.made = []

    def __enter__(self) -> IsolatedNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class Registry:
    """A read-only OCI distribution endpoint over plain HTTP serving some images, run as a
    child process (``python buildkit_e2e.py registry``), inside ``network`` when given. The
    child records every request it is sent, and every connection that tried HTTPS first, in
    a file that ``requests`` and ``tls_attempts`` read."""

    def __init__(
        self,
        host: str,
        port: int,
        images: Mapping[str, RegistryImage],
        workdir: Path,
        network: IsolatedNetwork | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.images = dict(images)  # "library/name:tag" -> image
        self.workdir = workdir
        self.network = network
        self.images_path = workdir / "images.json"
        self.record_path = workdir / "requests.jsonl"
        self.log_path = workdir / "registry.log"
        self.process: subprocess.Popen[str] | None = None

    def _records(self) -> list[dict[str, str]]:
        if not self.record_path.exists():
            return []
        lines = self.record_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    @property
    def requests(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self._records() if "method" in r]

    @property
    def tls_attempts(self) -> int:
        return sum(1 for r in self._records() if r.get("tls"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.images_path.write_text(
            json.dumps(
                {
                    name: {
                        "manifest": base64.b64encode(image.manifest).decode(),
                        "blobs": {d: base64.b64encode(b).decode() for d, b in image.blobs.items()},
                    }
                    for name, image in self.images.items()
                }
            )
        )
        self.record_path.write_text("")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "registry",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--images",
            str(self.images_path),
            "--record",
            str(self.record_path),
        ]
        if self.network is not None:
            command = [*self.network.exec_prefix(), *command]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
            )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            raise HarnessError(
                f"the registry did not start in {timeout:.0f}s ({' '.join(command)}):\n"
                f"{line}{self.log()}"
            )
        # This side reaches the server (through the veth when in a namespace).
        try:
            with socket.create_connection((self.host, self.port), timeout=10):
                pass
        except OSError as err:
            self.stop()
            raise HarnessError(f"the registry at {self.address} is unreachable: {err}") from err
        where = f" in network namespace {self.network.name}" if self.network else ""
        print(f"e2e: registry on {self.address}{where}", file=sys.stderr)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_registry(host: str, port: int, images_path: Path, record_path: Path) -> None:
    """The registry server of ``Registry``: serves the images of ``images_path`` on
    host:port until SIGTERM, appending a JSON line per request (or HTTPS attempt) to
    ``record_path``."""
    images = {
        name: RegistryImage(
            manifest=base64.b64decode(entry["manifest"]),
            blobs={d: base64.b64decode(b) for d, b in entry["blobs"].items()},
        )
        for name, entry in json.loads(images_path.read_text()).items()
    }
    record_lock = threading.Lock()
    record_file = record_path.open("a")

    def record(entry: Mapping[str, Any]) -> None:
        with record_lock:
            record_file.write(json.dumps(entry) + "\n")
            record_file.flush()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle_one_request(self) -> None:
            # A TLS ClientHello (an HTTPS attempt): answer as Go's net/http does, which is
            # what BuildKit's HTTPS-then-HTTP fallback for insecure registries looks for.
            reader: io.BufferedReader = self.rfile  # type: ignore[assignment]
            if reader.peek(1)[:1] == b"\x16":
                record({"tls": True})
                self.wfile.write(
                    b"HTTP/1.0 400 Bad Request\r\n\r\n"
                    b"Client sent an HTTP request to an HTTPS server.\n"
                )
                self.close_connection = True
                return
            super().handle_one_request()

        def _serve(self, body: bool) -> None:
            record({"method": self.command, "path": self.path})
            path = urlsplit(self.path).path  # mirrors are sent ?ns=<upstream registry>
            match = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", path)
            if path.rstrip("/") == "/v2":
                self._reply(200, b"{}", "application/json", body)
                return
            if not match:
                self._reply(404, b"{}", "application/json", body)
                return
            repo, kind, ref = match.groups()
            for key, image in images.items():
                name, tag = key.rsplit(":", 1)
                if name != repo:
                    continue
                if kind == "manifests" and ref in (tag, image.manifest_digest):
                    self._reply(
                        200,
                        image.manifest,
                        "application/vnd.oci.image.manifest.v1+json",
                        body,
                        digest=image.manifest_digest,
                    )
                    return
                if kind == "blobs" and ref in image.blobs:
                    self._reply(200, image.blobs[ref], "application/octet-stream", body, ref)
                    return
            self._reply(404, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json", body)

        def _reply(
            self, code: int, data: bytes, ctype: str, body: bool, digest: str | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        record_file.close()


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Child processes of the e2e harness.")
    commands = parser.add_subparsers(dest="command", required=True)
    registry = commands.add_parser("registry", help="serve images over plain HTTP")
    registry.add_argument("--host", required=True)
    registry.add_argument("--port", type=int, required=True)
    registry.add_argument("--images", type=Path, required=True)
    registry.add_argument("--record", type=Path, required=True)
    args = parser.parse_args(argv)
    serve_registry(args.host, args.port, args.images, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
