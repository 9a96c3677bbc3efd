"""Which keys of a raw ``buildkitd.config`` the operator merges: an allow-list.

A Builder author may tune what is theirs to tune (registry mirrors, garbage collection,
parallelism, platforms, logs, build history, DNS of the build containers, which frontends
run), never what the operator or the platform decides: the listeners and their TLS
(``grpc.*``), the state directory (``root``), the worker's binaries, paths, user namespace
and process sandbox, CDI device specs, the OpenTelemetry socket, the containerd worker (a
host's containerd), registry client keys read from the daemon's files. The
``[grpc] debugAddress`` the reserved ``--debugaddr`` flag closes would otherwise reopen an
unauthenticated pprof and cache port through the config file.

An allow-list rather than a list of what is refused: a key a later BuildKit adds is refused
until someone decides it is safe. Names are compared exactly although buildkitd's decoder
(go-toml v2) also matches keys case-insensitively (``[GRPC] DebugAddress`` sets the same
field): any other spelling is simply not on the list. ``insecure-entitlements`` is allowed
here; whether the namespace opted into insecure entitlements is the admission policy's to
judge.

The keys are those BuildKit v0.34 reads (cmd/buildkitd/config/config.go and
util/resolver/config); ``_KNOWN`` tells a key buildkitd reads but the operator refuses from a
typo, so the message says which it is. Pure.
"""

from __future__ import annotations

import re
from typing import Any, Final

# Schema markers: a leaf takes any value; FREE is a table whose keys are free-form data
# (labels, options); "*" stands for any key of a table keyed by name (registries).
LEAF: Final = None
FREE: Final = "free"

_GC = {
    "gc": LEAF, "gckeepstorage": LEAF, "reservedSpace": LEAF, "maxUsedSpace": LEAF,
    "minFreeSpace": LEAF,
    "gcpolicy": {"all": LEAF, "filters": LEAF, "keepDuration": LEAF, "keepBytes": LEAF,
                 "reservedSpace": LEAF, "maxUsedSpace": LEAF, "minFreeSpace": LEAF},
}  # fmt: skip
_NETWORK = dict.fromkeys(
    ("networkMode", "cniConfigPath", "cniBinaryPath", "cniPoolSize", "bridgeName",
     "bridgeSubnet"), LEAF,
)  # fmt: skip
_FRONTENDS = {
    "dockerfile.v0": {"enabled": LEAF},
    "gateway.v0": {"enabled": LEAF, "allowedRepositories": LEAF},
}
_HISTORY = {"maxAge": LEAF, "maxEntries": LEAF}
_DNS = {"nameservers": LEAF, "options": LEAF, "searchDomains": LEAF}
_SYSTEM = {"platformsCacheMaxAge": LEAF, "maxRegistryConcurrency": LEAF,
           "sessionAuthTimeout": LEAF}  # fmt: skip

# Every key buildkitd v0.34 reads.
_KNOWN: dict[str, Any] = {
    "debug": LEAF, "trace": LEAF, "root": LEAF, "insecure-entitlements": LEAF,
    "proxyNetwork": LEAF, "provenanceEnvDir": LEAF,
    "log": {"format": LEAF, "level": LEAF},
    "grpc": {"address": LEAF, "debugAddress": LEAF, "uid": LEAF, "gid": LEAF,
             "securityDescriptor": LEAF, "tls": {"cert": LEAF, "key": LEAF, "ca": LEAF}},
    "otel": {"socketPath": LEAF},
    "cdi": {"disabled": LEAF, "specDirs": LEAF, "autoAllowed": LEAF},
    "worker": {
        "oci": {**_GC, **_NETWORK, "enabled": LEAF, "labels": FREE, "platforms": LEAF,
                "snapshotter": LEAF, "rootless": LEAF, "noProcessSandbox": LEAF,
                "userRemapUnsupported": LEAF, "binary": LEAF, "proxySnapshotterPath": LEAF,
                "defaultCgroupParent": LEAF, "stargzSnapshotter": FREE,
                "apparmor-profile": LEAF, "selinux": LEAF, "max-parallelism": LEAF},
        "containerd": {**_GC, **_NETWORK, "address": LEAF, "enabled": LEAF, "labels": FREE,
                       "platforms": LEAF, "namespace": LEAF,
                       "runtime": {"name": LEAF, "path": LEAF, "options": FREE},
                       "snapshotter": LEAF, "apparmor-profile": LEAF, "selinux": LEAF,
                       "max-parallelism": LEAF, "defaultCgroupParent": LEAF,
                       "rootless": LEAF, "hypervIsolation": LEAF},
    },
    "registry": {"*": {"mirrors": LEAF, "http": LEAF, "insecure": LEAF, "ca": LEAF,
                       "keypair": {"key": LEAF, "cert": LEAF}, "tlsconfigdir": LEAF}},
    "dns": _DNS,
    "history": _HISTORY,
    "frontend": _FRONTENDS,
    "system": _SYSTEM,
    "cache": {"gha": FREE},
    "compaction": dict.fromkeys(
        ("enabled", "idleTimeout", "maxRetry", "writesPerCheck", "sizeWatermark",
         "sizeGrowthPercent", "minReclaimBytes", "minReclaimPercent",
         "minReclaimPercentFloor"), LEAF,
    ),
}  # fmt: skip

# What a Builder author may set. ``debug`` and ``trace`` are log levels in v0.34 (deprecated
# spellings of log.level), not listeners: the debug listener is grpc.debugAddress.
ALLOWED: dict[str, Any] = {
    "debug": LEAF, "trace": LEAF, "insecure-entitlements": LEAF,
    "log": {"format": LEAF, "level": LEAF},
    "worker": {"oci": {**_GC, "max-parallelism": LEAF, "platforms": LEAF, "labels": FREE}},
    "registry": {"*": {"mirrors": LEAF, "http": LEAF, "insecure": LEAF}},
    "dns": _DNS,
    "history": _HISTORY,
    "frontend": _FRONTENDS,
    "system": _SYSTEM,
}  # fmt: skip

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_path(parts: list[str]) -> str:
    """A dotted TOML key as a person would write it (``registry."docker.io".mirrors``)."""
    return ".".join(
        p if _BARE_KEY.fullmatch(p) else '"' + p.replace('"', '\\"') + '"' for p in parts
    )


def _child(schema: Any, key: str, *, fold: bool = False) -> Any:
    """The schema of ``key`` under a table's schema; KeyError when the table has no such key.
    ``fold`` matches as buildkitd's decoder does, ignoring case."""
    if not isinstance(schema, dict):
        raise KeyError(key)
    if key in schema:
        return schema[key]
    if fold:
        for name, child in schema.items():
            if name.lower() == key.lower():
                return child
    if "*" in schema:
        return schema["*"]
    raise KeyError(key)


def refused_keys(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(keys buildkitd reads that the operator does not merge, keys buildkitd does not read),
    as dotted paths in the document's order, each leaf named (``grpc.debugAddress``, not
    ``grpc``). The model bounds the depth of a config before this walks it."""
    refused: list[str] = []
    unknown: list[str] = []

    def walk(table: dict[str, Any], allowed: Any, known: Any, path: list[str]) -> None:
        for key, value in table.items():
            where = [*path, key]
            allowed_child = _lookup(allowed, key)
            known_child = _lookup(known, key, fold=True)
            tables = (
                [value]
                if isinstance(value, dict)
                else [v for v in value if isinstance(v, dict)]
                if isinstance(value, list)
                else []
            )
            if isinstance(allowed_child, dict) and tables:
                for child in tables:
                    walk(child, allowed_child, known_child, where)
            elif allowed_child is not KeyError and not isinstance(allowed_child, dict):
                continue  # an allowed leaf or free-form table: taken as written
            elif isinstance(known_child, dict) and tables:
                # A table buildkitd reads but the operator refuses: name its leaves.
                for child in tables:
                    walk(child, KeyError, known_child, where)
            elif known_child is KeyError:
                unknown.append(key_path(where))
            else:  # refused, or a value where buildkitd reads a table
                refused.append(key_path(where))

    walk(document, ALLOWED, _KNOWN, [])
    return refused, unknown


def _lookup(schema: Any, key: str, *, fold: bool = False) -> Any:
    try:
        return _child(schema, key, fold=fold)
    except KeyError:
        return KeyError


def config_problem(document: dict[str, Any]) -> str | None:
    """What is wrong with a parsed raw buildkitd.toml, in one sentence; None when every key
    is one the operator merges."""
    refused, unknown = refused_keys(document)
    parts = []
    if refused:
        parts.append(
            f"{_keys(refused)} not allowed: the operator owns buildkitd's listeners, paths, "
            "binaries and sandbox (allowed: registry.<name>.{mirrors,http,insecure}, "
            "worker.oci gc settings, gcpolicy, max-parallelism, platforms and labels, log, "
            "history, dns, frontend, system, insecure-entitlements)"
        )
    if unknown:
        parts.append(f"{_keys(unknown)} not read by buildkitd")
    return "; ".join(parts) or None


def _keys(paths: list[str]) -> str:
    return (
        ("key " if len(paths) == 1 else "keys ")
        + ", ".join(paths)
        + (" is" if len(paths) == 1 else " are")
    )
