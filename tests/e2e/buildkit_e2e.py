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
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
        return containers[0]

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
        """The client Secret's files, as `buildkit-operator connect` would write them."""
        return write_certs(self.secret_data("-client-tls"), into)


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

    def build(
        self,
        context: Path,
        output: str,
        *,
        opts: Mapping[str, str] | None = None,
        locals_: Mapping[str, Path] | None = None,
        check: bool = True,
    ) -> BuildResult:
        """The built-in Dockerfile frontend on ``context`` (its Dockerfile inside)."""
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
        uid = ROOTLESS_UID if self.rootless else 0
        group = (self.pod.get("securityContext") or {}).get("fsGroup")
        paths: dict[str, Path] = {}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume or "emptyDir" in volume:
                host = self.layout.state
                host.mkdir(parents=True, exist_ok=True)
                os.chown(host, uid, group if group is not None else uid)
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
            print(f"buildkitd {process.pid} ignored SIGTERM for {timeout:.0f}s: killing", file=sys.stderr)
        # rootlesskit's children and anything they started share the session's process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


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


class Registry:
    """A read-only OCI distribution endpoint over plain HTTP serving some images; it records
    every request it was sent (and every connection that did not speak HTTP)."""

    def __init__(self, host: str, images: Mapping[str, RegistryImage]) -> None:
        self.images = dict(images)  # "library/name:tag" -> image
        self.requests: list[tuple[str, str]] = []
        self.bad_requests = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                if code == 400:
                    registry.bad_requests += 1
                super().send_error(code, message, explain)

            def _serve(self, body: bool) -> None:
                registry.requests.append((self.command, self.path))
                match = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", self.path)
                if self.path.rstrip("/") == "/v2":
                    self._reply(200, b"{}", "application/json", body)
                    return
                if not match:
                    self._reply(404, b"{}", "application/json", body)
                    return
                repo, kind, ref = match.groups()
                for key, image in registry.images.items():
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

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Registry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def non_loopback_ipv4() -> str | None:
    """An address of this machine that is not loopback (registries on loopback are always
    plain HTTP to BuildKit, which would hide the insecureRegistries setting)."""
    result = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
    for address in result.stdout.split():
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address) and not address.startswith("127."):
            return address
    return None
