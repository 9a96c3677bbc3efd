"""A raw buildkitd.config is merged only where its keys are a Builder author's to tune:
any other key makes the Builder Invalid, naming the key; none is merged silently.

The lists below come from BuildKit's config (cmd/buildkitd/config/config.go of the pinned
v0.34) and from what the platform owns, not from the operator's allow-list.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomlkit
from hypothesis import example, given, settings
from hypothesis import strategies as st

from buildkit_operator.api import Builder, InvalidBuilder
from buildkit_operator.render.config import buildkitd_toml
from cli_in_process import run_cli

# Keys that reach listeners, paths, binaries, sockets, devices or the sandbox: never merged.
NEVER = [
    ("grpc", "debugAddress"), ("grpc", "address"), ("grpc", "uid"), ("grpc", "gid"),
    ("grpc", "tls", "cert"), ("grpc", "tls", "key"), ("grpc", "tls", "ca"),
    ("root",), ("provenanceEnvDir",), ("otel", "socketPath"),
    ("cdi", "specDirs"), ("cdi", "disabled"), ("cdi", "autoAllowed"),
    ("worker", "oci", "binary"), ("worker", "oci", "rootless"),
    ("worker", "oci", "noProcessSandbox"), ("worker", "oci", "proxySnapshotterPath"),
    ("worker", "oci", "cniBinaryPath"), ("worker", "oci", "cniConfigPath"),
    ("worker", "oci", "networkMode"), ("worker", "oci", "apparmor-profile"),
    ("worker", "oci", "userRemapUnsupported"), ("worker", "oci", "defaultCgroupParent"),
    ("worker", "containerd", "address"), ("worker", "containerd", "enabled"),
    ("worker", "containerd", "runtime", "path"),
    ("registry", "docker.io", "keypair", "key"), ("registry", "docker.io", "ca"),
    ("registry", "docker.io", "tlsconfigdir"),
    ("cache", "gha", "sign", "command"),
]  # fmt: skip

# What a Builder author legitimately tunes: always merged.
TUNABLE = [
    ("registry", "docker.io", "mirrors"), ("registry", "ghcr.io", "http"),
    ("registry", "r.internal:5000", "insecure"),
    ("worker", "oci", "max-parallelism"), ("worker", "oci", "platforms"),
    ("worker", "oci", "gc"), ("worker", "oci", "gckeepstorage"),
    ("worker", "oci", "reservedSpace"), ("worker", "oci", "maxUsedSpace"),
    ("worker", "oci", "minFreeSpace"),
    ("log", "format"), ("log", "level"), ("history", "maxAge"), ("history", "maxEntries"),
    ("insecure-entitlements",), ("debug",), ("dns", "nameservers"),
    ("frontend", "gateway.v0", "allowedRepositories"),
]  # fmt: skip


def manifest(config: str) -> dict[str, Any]:
    return {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": "x", "namespace": "team"},
        "spec": {"buildkitd": {"config": config}},
    }


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if p.replace("-", "").replace("_", "").isalnum() else f'"{p}"' for p in path)


def document(paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """Nested tables setting each path (a path below another one's leaf is dropped)."""
    doc: dict[str, Any] = {}
    for path in paths:
        table = doc
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                break
        else:
            if path[-1] not in table:
                table[path[-1]] = "1"
    return doc


def leaves(doc: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            found += leaves(value, (*path, key))
        elif not isinstance(value, dict):
            found.append((*path, key))
    return found


def rendered_config(builder: Builder) -> dict[str, Any]:
    return tomllib.loads(buildkitd_toml(builder))


def has_path(doc: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def test_the_example_of_a_debug_listener_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidBuilder) as err:
        Builder.from_manifest(manifest('[grpc]\ndebugAddress = "0.0.0.0:6060"\n'))
    assert err.value.problems[0].startswith(
        "spec.buildkitd.config: key grpc.debugAddress is not allowed"
    ), err.value.problems


def test_tunable_keys_are_merged() -> None:
    raw = """
debug = true
insecure-entitlements = ["network.host"]
[log]
format = "json"
[worker.oci]
max-parallelism = 2
gc = true
reservedSpace = "1GB"
[[worker.oci.gcpolicy]]
all = true
keepDuration = "48h"
[registry."docker.io"]
mirrors = ["m:5000"]
[frontend."dockerfile.v0"]
enabled = true
[history]
maxEntries = 10
"""
    config = rendered_config(Builder.from_manifest(manifest(raw)))
    assert config["log"] == {"format": "json"}
    assert config["worker"]["oci"]["gcpolicy"] == [{"all": True, "keepDuration": "48h"}]
    assert config["registry"]["docker.io"]["mirrors"] == ["m:5000"]
    assert config["insecure-entitlements"] == ["network.host"]


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ('[GRPC]\nDebugAddress = "0.0.0.0:6060"\n', "GRPC.DebugAddress"),  # decoder folds case
        ('[worker.oci]\nNoProcessSandbox = true\n', "worker.oci.NoProcessSandbox"),
        ('grpc = {debugAddress = "0.0.0.0:6060"}\n', "grpc.debugAddress"),
        ('grpc.debugAddress = "0.0.0.0:6060"\n', "grpc.debugAddress"),
        ('[[worker.oci.gcpolicy]]\nall = true\n[worker.containerd]\naddress = "/run/c.sock"\n',
         "worker.containerd.address"),
        ('[registry."docker.io"]\nmirrors = ["m"]\nca = ["/etc/shadow"]\n',
         'registry."docker.io".ca'),
        ('[worker.oci.stargzSnapshotter]\nx = 1\n', "worker.oci.stargzSnapshotter"),
        ('[cache.gha.sign]\ncommand = ["sh"]\n', "cache.gha"),
    ],
)  # fmt: skip
def test_refused_keys_in_every_spelling(raw: str, named: str) -> None:
    with pytest.raises(InvalidBuilder) as err:
        Builder.from_manifest(manifest(raw))
    assert named in err.value.problems[0] and "not allowed" in err.value.problems[0]


def test_typos_are_named_with_their_path() -> None:
    raw = (
        '[worker.oci]\nmax_parallelism = 2\n[registry."ghcr.io"]\nmirror = ["m"]\n[workers]\nx=1\n'
    )
    with pytest.raises(InvalidBuilder) as err:
        Builder.from_manifest(manifest(raw))
    message = err.value.problems[0]
    assert message == (
        "spec.buildkitd.config: keys worker.oci.max_parallelism, "
        'registry."ghcr.io".mirror, workers are not read by buildkitd'
    )


def test_render_refuses_a_refused_key() -> None:
    doc = (
        "apiVersion: buildkit.dev/v1alpha1\nkind: Builder\nmetadata: {name: x}\n"
        "spec:\n  buildkitd:\n    config: |\n      [grpc]\n      debugAddress = ':6060'\n"
    )
    proc = run_cli("render", "-f", "-", stdin=doc)
    assert proc.returncode != 0
    assert "grpc.debugAddress" in proc.stderr and "kind: Deployment" not in proc.stdout


def _case_variant(path: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.upper() if i == len(path) - 1 else p for i, p in enumerate(path))


random_key = st.text(st.sampled_from("abcxyzABC-_."), min_size=1, max_size=8)
paths = st.one_of(
    st.sampled_from(NEVER),
    st.sampled_from(TUNABLE),
    st.sampled_from(NEVER).map(_case_variant),
    st.lists(random_key, min_size=1, max_size=3).map(tuple),
    st.tuples(st.sampled_from(["worker", "registry", "grpc", "log"]), random_key),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(paths, min_size=1, max_size=6))
@example([("grpc", "debugAddress")])
@example([("registry", "docker.io", "mirrors"), ("GRPC", "DEBUGADDRESS")])
@example([("worker", "oci", "gc"), ("worker", "oci", "binary")])
def test_every_key_is_merged_or_named(chosen: list[tuple[str, ...]]) -> None:
    """Each key is either in the rendered buildkitd.toml or named in the Invalid message;
    a key that reaches what the platform owns (in any case) is never merged; a config of
    tunable keys only is always merged."""
    doc = document(chosen)
    keys = leaves(doc)
    never = {tuple(p.lower() for p in path) for path in NEVER}

    def is_never(path: tuple[str, ...]) -> bool:
        lowered = tuple(p.lower() for p in path)
        return any(lowered[: len(n)] == n or n[: len(lowered)] == lowered for n in never)

    try:
        builder = Builder.from_manifest(manifest(tomlkit.dumps(doc)))
    except InvalidBuilder as err:
        message = " ".join(err.problems)
        assert message.startswith("spec.buildkitd.config: "), message
        assert not all(path in TUNABLE for path in keys), message
        for path in keys:
            if is_never(path):
                assert dotted(path) in message or dotted(path[:2]) in message, (path, message)
        return
    config = rendered_config(builder)
    for path in keys:
        assert not is_never(path), f"{dotted(path)} was merged"
        assert has_path(config, path), f"{dotted(path)} accepted but not in the ConfigMap"


@pytest.mark.parametrize(
    "raws",
    [
        # Values equal in Python but not in TOML: each is printed as written.
        ("[history]\nmaxEntries = 1\n", "[history]\nmaxEntries = 1.0\n",
         '[history]\nmaxEntries = "1"\n', "debug = true\n", "debug = 1\n"),
        # The same keys in another order, and a value changed back.
        ("[history]\nmaxEntries = 10\nmaxAge = 60\n", "[history]\nmaxAge = 60\nmaxEntries = 10\n",
         "[history]\nmaxEntries = 11\nmaxAge = 60\n", "[history]\nmaxEntries = 10\nmaxAge = 60\n"),
    ],
)  # fmt: skip
def test_each_config_is_rendered_as_its_own_whatever_was_rendered_before(
    raws: tuple[str, ...],
) -> None:
    """A Builder's buildkitd.toml is rendered once per distinct settings document and
    reused: it must be the one of its own settings, never another's that compares equal."""
    for raw in raws:
        text = buildkitd_toml(Builder.from_manifest(manifest(raw)))
        settings = tomllib.loads(text)
        assert tomlkit.dumps(tomlkit.parse(text)) == text
        merged = tomllib.loads(raw)
        for table, values in merged.items():
            got = settings[table]
            if isinstance(values, dict):
                for key, value in values.items():
                    assert got[key] == value and type(got[key]) is type(value), (raw, text)
            else:
                assert got == values and type(got) is type(values), (raw, text)
