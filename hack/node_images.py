#!/usr/bin/env python3
"""The container images of the real node, made on this machine and pulled from nowhere.

No registry is reachable, so every image a pod of the real node runs is built here, by the
pinned buildkitd (hack/tools/buildkit) run as a host process, into an OCI tarball that
hack/node.py imports into the node's containerd:

- ``registry.k8s.io/pause:<tag>``: the sandbox image, from ``build/pause/linux/pause.c`` of
  the pinned k8s.io/kubernetes module, compiled static with gcc.
- ``docker.io/moby/buildkit:<version>`` and ``...-rootless``: the images the operator runs by
  default (hack/images/buildkit.Dockerfile), on a Debian bookworm root filesystem that
  mmdebstrap makes from Debian packages.
- ``buildkit-operator:<version>``: the project's own Dockerfile, with PYTHON_IMAGE pointing at
  a Debian bookworm + Python 3.11 base made the same way (hack/images/python.Dockerfile).
- ``buildkit-operator.local/registry:<version>``: the distribution registry of the pinned
  hack/tools/registry module (hack/images/registry.Dockerfile), the cluster's own registry.
- ``buildkit-operator.local/coredns:<version>``: CoreDNS of the pinned hack/tools/coredns
  module (hack/images/coredns.Dockerfile), the cluster's DNS.

Each tarball is cached under $BKO_CACHE_DIR/images/ by a key over everything that goes into
it (recipes, package lists, binaries, sources), so a warm run builds nothing.

    python hack/node_images.py build [--only NAME ...]   build the missing images; print paths
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cgroups import cgroup_parent, kill_cgroup, remove_cgroup
from localcluster.processes import directory_lock

HACK_DIR = Path(__file__).resolve().parent
REPO = HACK_DIR.parent
IMAGES_DIR = HACK_DIR / "images"
BUILD_TOOLS = HACK_DIR / "build-tools.sh"

# The versions the operator renders by default (operator/buildkit_operator/api/buildkitd.py)
# and the sandbox image containerd 2.4 asks for.
BUILDKIT_VERSION = "v0.34.2"
PAUSE_TAG = "3.10.2"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_TAG}"
BUILDKIT_IMAGE = f"docker.io/moby/buildkit:{BUILDKIT_VERSION}"
BUILDKIT_ROOTLESS_IMAGE = f"docker.io/moby/buildkit:{BUILDKIT_VERSION}-rootless"
OPERATOR_IMAGE = "docker.io/library/buildkit-operator:0.1.0"
# The name the operator image's PYTHON_IMAGE build argument refers to, served from a local
# OCI layout instead of a registry.
PYTHON_BASE = "buildkit-operator.local/python:3.11-bookworm"
REGISTRY_VERSION = "v3.1.2"  # hack/tools/registry/build.env
REGISTRY_IMAGE = f"buildkit-operator.local/registry:{REGISTRY_VERSION}"
COREDNS_VERSION = "v1.15.0"  # hack/tools/coredns/build.env
COREDNS_IMAGE = f"buildkit-operator.local/coredns:{COREDNS_VERSION}"
ALL_IMAGES = ("pause", "buildkit", "buildkit-rootless", "operator", "registry", "coredns")

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the moby/buildkit images carry besides buildkitd and buildctl: runc for the OCI
# worker; rootlesskit, newuidmap/newgidmap (uidmap) and fuse-overlayfs for rootless; git and
# certificates for remote contexts.
BUILDKIT_PACKAGES = (
    "runc",
    "rootlesskit",
    "uidmap",
    "libcap2-bin",  # setcap, for newuidmap/newgidmap
    "fuse-overlayfs",
    "ca-certificates",
    "git",
)
PYTHON_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")

BUILD_TIMEOUT = 1800.0
# The host's trust store goes into the Python base, so that `pip install` in the project's
# Dockerfile trusts the package index exactly as the host's pip does (a machine whose HTTPS
# traffic passes a proxy with its own CA trusts that CA here).
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def log(message: str) -> None:
    print(f"node-images: {message}", file=sys.stderr, flush=True)


class ImageError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("BKO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "buildkit-operator"
    )
    return Path(base) / "images"


def _digest(*parts: bytes | str | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.read_bytes())
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _generated(path: Path) -> bool:
    """Bytecode and the metadata of an editable install: not sources of the image."""
    return (
        "__pycache__" in path.parts
        or path.suffix == ".pyc"
        or any(part.endswith(".egg-info") for part in path.parts)
    )


def _tree_digest(root: Path) -> str:
    """Content of every file under root (bytecode caches left out), in a stable order."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _generated(path):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def tool_bin(tool: str) -> Path:
    result = subprocess.run(
        [str(BUILD_TOOLS), "--print-path", tool], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"hack/build-tools.sh {tool} failed (exit {result.returncode})")
    return Path(result.stdout.strip())


def kubernetes_source() -> Path:
    """The pinned k8s.io/kubernetes module's directory (for build/pause/linux/pause.c)."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GONOSUMDB": "*", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        cwd=HACK_DIR / "tools" / "kubernetes-node",
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        check=False,
    )
    directory = Path(result.stdout.strip())
    if result.returncode != 0 or not (directory / "build/pause/linux/pause.c").is_file():
        raise ImageError("cannot find build/pause/linux/pause.c in the k8s.io/kubernetes module")
    return directory


def debian_rootfs(packages: Sequence[str], cache: Path) -> Path:
    """A Debian root filesystem tarball from mmdebstrap, cached by suite and package list."""
    key = _digest(DEBIAN_SUITE, DEBIAN_MIRROR, " ".join(sorted(packages)), "minbase")
    target = cache / "rootfs" / f"{DEBIAN_SUITE}-{key}.tar"
    if target.exists():
        return target
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (hack/install-runtime-deps.sh --node)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.tar")
    started = time.monotonic()
    log(f"mmdebstrap {DEBIAN_SUITE} with {', '.join(packages)}")
    result = subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--format=tar",
            "--quiet",
            f"--include={','.join(packages)}",
            # Smaller images: no documentation, manual pages or apt lists.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*.bin",
            DEBIAN_SUITE,
            str(tmp),
            DEBIAN_MIRROR,
        ],
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=BUILD_TIMEOUT,
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"mmdebstrap failed with exit status {result.returncode}")
    tmp.replace(target)
    log(f"root filesystem made in {time.monotonic() - started:.0f}s: {target}")
    return target


@dataclass
class Recipe:
    """One image: its name, Dockerfile, target, and the files its build context holds."""

    key: str
    name: str
    dockerfile: Path
    context_files: dict[str, Path] = field(default_factory=dict)
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    # Named contexts served from OCI tarballs of other recipes: {context name: recipe key}.
    image_contexts: dict[str, str] = field(default_factory=dict)
    # The build context is this directory (the repository) rather than context_files.
    context_dir: Path | None = None
    digest: str = ""

    def tarball(self, cache: Path) -> Path:
        safe = self.key.replace("/", "-")
        return cache / f"{safe}-{self.digest}.tar"


class HostBuildkitd:
    """The pinned buildkitd as a root host process on a private socket, for the duration
    of a build; its state lives in a temporary directory removed afterwards."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="bko-images-"))
        self.socket = self.dir / "buildkitd.sock"
        self.process: subprocess.Popen[bytes] | None = None
        # The build containers' cgroups go under this run's own, not under a shared
        # top-level "buildkit" that would outlive the daemon.
        self.cgroup = f"{cgroup_parent().rstrip('/')}/bko-images-{os.getpid()}"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def __enter__(self) -> HostBuildkitd:
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.dir),
        }
        (self.dir / "buildkitd.toml").write_text(
            f'[worker.oci]\n  defaultCgroupParent = "{self.cgroup}"\n'
        )
        with open(self.dir / "buildkitd.log", "wb") as out:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "buildkitd"),
                    "--addr",
                    self.address,
                    "--config",
                    str(self.dir / "buildkitd.toml"),
                    "--root",
                    str(self.dir / "state"),
                    "--oci-worker=true",
                    "--containerd-worker=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ImageError(f"buildkitd exited:\n{self.log_tail()}")
            probe = subprocess.run(
                [str(self.bin_dir / "buildctl"), "--addr", self.address, "debug", "workers"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return self
            time.sleep(0.5)
        raise ImageError(f"buildkitd not ready after 60s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.dir / "buildkitd.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # buildkitd unmounts its snapshots when it stops; anything still mounted below the
        # state directory (a killed daemon) is unmounted before the directory goes.
        state = str(self.dir)
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(state)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        kill_cgroup(self.cgroup)
        remove_cgroup(self.cgroup)

    def build(self, recipe: Recipe, cache: Path, tarballs: dict[str, Path]) -> None:
        with tempfile.TemporaryDirectory(prefix="bko-image-ctx-") as tmp:
            work = Path(tmp)
            context = recipe.context_dir or work / "context"
            if recipe.context_dir is None:
                context.mkdir()
                for rel, source in recipe.context_files.items():
                    if source.is_dir():
                        raise ImageError(f"{source} is a directory")
                    try:
                        os.link(source, context / rel)
                    except OSError:  # another filesystem
                        shutil.copy2(source, context / rel)
            dockerfile_dir = work / "dockerfile"
            dockerfile_dir.mkdir()
            shutil.copyfile(recipe.dockerfile, dockerfile_dir / "Dockerfile")
            out = recipe.tarball(cache)
            tmp_out = out.with_suffix(f".tmp{os.getpid()}")
            args = [
                str(self.bin_dir / "buildctl"),
                "--addr",
                self.address,
                "build",
                "--progress=plain",
                "--frontend=dockerfile.v0",
                "--local",
                f"context={context}",
                "--local",
                f"dockerfile={dockerfile_dir}",
                # The built-in Dockerfile frontend, even where the file names a `# syntax=`
                # image: that image would come from a registry.
                "--opt",
                "cmdline=dockerfile.v0",
                "--output",
                f"type=oci,dest={tmp_out},name={recipe.name}",
            ]
            if recipe.target:
                args += ["--opt", f"target={recipe.target}"]
            for key, value in recipe.build_args.items():
                args += ["--opt", f"build-arg:{key}={value}"]
            for context_name, other in recipe.image_contexts.items():
                layout = work / f"layout-{len(args)}"
                layout.mkdir()
                subprocess.run(["tar", "-xf", str(tarballs[other]), "-C", str(layout)], check=True)
                index = json.loads((layout / "index.json").read_text())
                digest = index["manifests"][0]["digest"]
                store = f"store{len(args)}"
                args += [
                    "--oci-layout",
                    f"{store}={layout}",
                    "--opt",
                    f"context:{context_name}=oci-layout://{store}@{digest}",
                ]
            started = time.monotonic()
            log(f"building {recipe.name} ({recipe.dockerfile.name})")
            with open(cache / f"{recipe.key.replace('/', '-')}.log", "wb") as build_log:
                result = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=build_log,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=BUILD_TIMEOUT,
                )
            if result.returncode != 0:
                tmp_out.unlink(missing_ok=True)
                tail = (cache / f"{recipe.key.replace('/', '-')}.log").read_text(errors="replace")
                raise ImageError(
                    f"building {recipe.name} failed:\n"
                    + "\n".join(tail.splitlines()[-30:])
                    + f"\n--- buildkitd:\n{self.log_tail()}"
                )
            tmp_out.replace(out)
            log(f"built {recipe.name} in {time.monotonic() - started:.0f}s -> {out}")


def _compile_pause(source: Path, cache: Path) -> Path:
    target = cache / "pause" / f"pause-{_digest(source)}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ImageError("no C compiler (gcc) to build the pause binary")
    # As build/pause/Makefile compiles it.
    subprocess.run(
        [cc, "-Os", "-Wall", "-Werror", "-static", f'-DVERSION=v{PAUSE_TAG}', "-o", str(tmp),
         str(source)],
        check=True,
    )  # fmt: skip
    tmp.replace(target)
    return target


def recipes(buildkit_bin: Path, cache: Path, only: Sequence[str] = ()) -> list[Recipe]:
    """Every image, with its cache key; the python base before the operator image."""
    wanted = set(only) or set(ALL_IMAGES)
    out: list[Recipe] = []
    if "pause" in wanted:
        pause_c = kubernetes_source() / "build/pause/linux/pause.c"
        pause = _compile_pause(pause_c, cache)
        dockerfile = IMAGES_DIR / "pause.Dockerfile"
        out.append(
            Recipe(
                key="pause",
                name=PAUSE_IMAGE,
                dockerfile=dockerfile,
                context_files={"pause": pause},
                digest=_digest(dockerfile, pause_c, PAUSE_TAG),
            )
        )
    if wanted & {"buildkit", "buildkit-rootless"}:
        dockerfile = IMAGES_DIR / "buildkit.Dockerfile"
        rootfs = debian_rootfs(BUILDKIT_PACKAGES, cache)
        files = {
            "rootfs.tar": rootfs,
            "buildkitd": buildkit_bin / "buildkitd",
            "buildctl": buildkit_bin / "buildctl",
        }
        base = _digest(
            dockerfile, rootfs.name, buildkit_bin / "buildkitd", buildkit_bin / "buildctl"
        )
        for key, name, target in (
            ("buildkit", BUILDKIT_IMAGE, "rootful"),
            ("buildkit-rootless", BUILDKIT_ROOTLESS_IMAGE, "rootless"),
        ):
            if key in wanted:
                out.append(
                    Recipe(
                        key=key,
                        name=name,
                        dockerfile=dockerfile,
                        context_files=files,
                        target=target,
                        digest=_digest(base, target),
                    )
                )
    if "operator" in wanted:
        dockerfile = IMAGES_DIR / "python.Dockerfile"
        rootfs = debian_rootfs(PYTHON_PACKAGES, cache)
        trust = Path(HOST_CA_BUNDLE)
        python = Recipe(
            key="python-base",
            name=PYTHON_BASE,
            dockerfile=dockerfile,
            context_files={"rootfs.tar": rootfs, "ca-certificates.crt": trust},
            digest=_digest(dockerfile, rootfs.name, trust),
        )
        out.append(python)
        sources = _digest(
            REPO / "Dockerfile",
            REPO / "pyproject.toml",
            REPO / "README.md",
            _tree_digest(REPO / "operator"),
            python.digest,
        )
        out.append(
            Recipe(
                key="operator",
                name=OPERATOR_IMAGE,
                dockerfile=REPO / "Dockerfile",
                context_dir=_operator_context(cache, sources),
                build_args={"PYTHON_IMAGE": PYTHON_BASE},
                image_contexts={PYTHON_BASE: "python-base"},
                digest=sources,
            )
        )
    # Static Go programs of hack/tools with their configuration file, on scratch.
    for key, name, config in (
        ("registry", REGISTRY_IMAGE, "registry-config.yml"),
        ("coredns", COREDNS_IMAGE, "Corefile"),
    ):
        if key in wanted:
            dockerfile = IMAGES_DIR / f"{key}.Dockerfile"
            binary = tool_bin(key) / key
            out.append(
                Recipe(
                    key=key,
                    name=name,
                    dockerfile=dockerfile,
                    context_files={key: binary, config: IMAGES_DIR / config},
                    digest=_digest(dockerfile, IMAGES_DIR / config, binary),
                )
            )
    return out


def _operator_context(cache: Path, digest: str) -> Path:
    """The repository files the project's Dockerfile copies, and nothing else (no .venv,
    no cluster state), so the context sent to buildkitd stays small."""
    target = cache / "contexts" / f"operator-{digest}"
    if target.exists():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tmp / name)
    shutil.copytree(
        REPO / "operator",
        tmp / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    tmp.replace(target)
    return target


def build(only: Sequence[str] = ()) -> dict[str, Path]:
    """Build the images not in the cache; returns {image name: OCI tarball}."""
    cache = cache_dir()
    buildkit_bin = tool_bin("buildkit")
    # One builder at a time per cache: another run waits and then finds the images made.
    with directory_lock(cache):
        wanted = recipes(buildkit_bin, cache, only)
        tarballs = {r.key: r.tarball(cache) for r in wanted}
        missing = [r for r in wanted if not r.tarball(cache).exists()]
        if missing:
            started = time.monotonic()
            with HostBuildkitd(buildkit_bin) as daemon:
                for recipe in missing:
                    daemon.build(recipe, cache, tarballs)
            log(f"{len(missing)} images built in {time.monotonic() - started:.0f}s")
        else:
            log(f"{len(wanted)} images cached in {cache}")
        return {r.name: r.tarball(cache) for r in wanted if r.key != "python-base"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node_images.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the missing images and print name=tarball lines")
    b.add_argument("--only", nargs="*", default=[], help=" ".join(ALL_IMAGES))
    args = parser.parse_args(argv)
    try:
        for name, path in build(args.only).items():
            print(f"{name}={path}")
    except (ImageError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
