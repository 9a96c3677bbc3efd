"""The buildkitd daemon: its default image, the flags the operator owns, and the
buildkitd section of the spec (extra flags, registries, platforms, raw buildkitd.toml)."""

from __future__ import annotations

import re
import tomllib
from typing import Annotated, Any

from pydantic import Field, StrictInt, field_validator

from .buildkitd_config import config_problem
from .camel_model import CamelModel
from .cel import cel_matches, cel_rule, validations
from .syntax import (
    MAX_ARG_LENGTH,
    MAX_ARGS,
    MAX_PLATFORM_LENGTH,
    MAX_PLATFORMS,
    PLATFORM_PATTERN,
    PLATFORM_RE,
)

BUILDKIT_VERSION = "v0.34.2"
DEFAULT_IMAGE_REPOSITORY = "docker.io/moby/buildkit"
DEFAULT_IMAGE_ROOTFUL = f"{DEFAULT_IMAGE_REPOSITORY}:{BUILDKIT_VERSION}"
DEFAULT_IMAGE_ROOTLESS = f"{DEFAULT_IMAGE_REPOSITORY}:{BUILDKIT_VERSION}-rootless"

# Flags the operator owns on the buildkitd command line: letting users pass them would
# silently break the listener, TLS or cache layout the rest of the spec describes.
RESERVED_BUILDKITD_FLAGS = (
    "--addr",
    "--config",
    "--root",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--oci-worker-no-process-sandbox",
    "--debugaddr",
)

# Flags no Builder author may pass at all: they point buildkitd at binaries, paths, sockets
# or devices of the pod or the host, or change the build containers' sandbox; the
# containerd worker would drive a host's containerd. ``--allow-insecure-entitlement`` is not
# among them: the namespace's opt-in decides it, at admission.
FORBIDDEN_BUILDKITD_FLAGS = (
    "--oci-worker-binary",
    "--oci-worker-proxy-snapshotter-path",
    "--oci-cni-config-path",
    "--oci-cni-binary-dir",
    "--oci-worker-apparmor-profile",
    "--oci-worker-net",
    "--rootless",
    "--group",
    "--cdi-spec-dir",
    "--otel-socket-path",
)
FORBIDDEN_BUILDKITD_FLAG_PREFIX = "--containerd-"

# A reserved flag in any form buildkitd's parser reads: -flag, --flag, --flag=value.
assert all(
    re.fullmatch(r"--[a-z-]+", flag)
    for flag in (*RESERVED_BUILDKITD_FLAGS, *FORBIDDEN_BUILDKITD_FLAGS)
)
_RESERVED_FLAG_PATTERN = (
    "^-+(" + "|".join(flag.removeprefix("--") for flag in RESERVED_BUILDKITD_FLAGS) + ")(=|$)"
)
# Written compactly (the API server bounds each rule's estimated cost, which grows with the
# pattern's length); tests/unit/test_crd.py checks it matches every flag above.
_FORBIDDEN_FLAG_PATTERN = (
    "^-+(oci-(worker-(binary|proxy-snapshotter-path|apparmor-profile|net)|cni-[a-z-]+)"
    "|rootless|group|cdi-spec-dir|otel-socket-path|containerd-[a-z-]*)(=|$)"
)
_FORBIDDEN_FLAG_RE = re.compile(_FORBIDDEN_FLAG_PATTERN)
assert all(_FORBIDDEN_FLAG_RE.match(flag) for flag in FORBIDDEN_BUILDKITD_FLAGS)

_FORBIDDEN_MESSAGE = (
    "reaches binaries, paths, sockets or the sandbox the operator owns and cannot be passed in args"
)

# Levels of tables and arrays a raw buildkitd.toml may nest.
MAX_CONFIG_DEPTH = 32


class BuildkitdSpec(CamelModel):
    """Settings of the buildkitd daemon and its buildkitd.toml."""

    args: Annotated[
        list[
            Annotated[
                str,
                validations(
                    cel_rule(
                        f"!{cel_matches('self', _RESERVED_FLAG_PATTERN)}",
                        "flags the operator sets from the spec ("
                        + ", ".join(RESERVED_BUILDKITD_FLAGS)
                        + ") cannot be passed in args",
                        message_expression=(
                            "'--' + self.split('=')[0].substring(self.startsWith('--') ? 2 : 1)"
                            " + ' is set by the operator from the spec and cannot be passed in "
                            "args'"
                        ),
                    ),
                    cel_rule(
                        f"!{cel_matches('self', _FORBIDDEN_FLAG_PATTERN)}",
                        "flags that reach binaries, paths, sockets or the sandbox ("
                        + ", ".join(FORBIDDEN_BUILDKITD_FLAGS)
                        + f", {FORBIDDEN_BUILDKITD_FLAG_PREFIX}*) cannot be passed in args",
                        message_expression=(
                            "'--' + self.split('=')[0].substring(self.startsWith('--') ? 2 : 1)"
                            " + ' " + _FORBIDDEN_MESSAGE + "'"
                        ),
                    ),
                    maxLength=MAX_ARG_LENGTH,
                ),
            ]
        ],
        Field(max_length=MAX_ARGS),
    ] = Field(
        default_factory=list,
        description="Extra buildkitd flags, appended after the ones the operator sets.",
    )
    max_parallelism: StrictInt | None = Field(
        None, ge=1, description="Maximum build steps run at once ([worker.oci] max-parallelism)."
    )
    registry_mirrors: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Mirrors per registry, e.g. {docker.io: [mirror.internal:5000]}.",
    )
    insecure_registries: list[str] = Field(
        default_factory=list,
        description="Registries reached over plain HTTP or with unverified TLS.",
    )
    platforms: Annotated[
        list[
            Annotated[
                str,
                validations(
                    cel_rule(
                        cel_matches("self", PLATFORM_PATTERN),
                        "must be a platform such as linux/amd64",
                        message_expression=(
                            '"\'" + self + "\' is not a platform such as linux/amd64"'
                        ),
                    ),
                    maxLength=MAX_PLATFORM_LENGTH,
                ),
            ]
        ],
        Field(max_length=MAX_PLATFORMS),
    ] = Field(
        default_factory=list,
        description="Platforms the worker advertises, e.g. [linux/amd64, linux/arm64].",
    )
    config: str | None = Field(
        None,
        description=(
            "Raw buildkitd.toml merged under the generated one: the fields above win "
            "where both set the same key."
        ),
    )

    @field_validator("args")
    @classmethod
    def _no_reserved_flags(cls, args: list[str]) -> list[str]:
        for arg in args:
            if len(arg) > MAX_ARG_LENGTH:
                raise ValueError(f"an argument is longer than {MAX_ARG_LENGTH} characters")
            # buildkitd's flag parser takes -flag and --flag alike.
            flag = arg.split("=", 1)[0]
            if flag.startswith("-"):
                flag = "--" + flag.lstrip("-")
            if flag in RESERVED_BUILDKITD_FLAGS:
                raise ValueError(
                    f"{flag} is set by the operator from the spec and cannot be passed in args"
                )
            if _FORBIDDEN_FLAG_RE.match(arg):
                raise ValueError(f"{flag} {_FORBIDDEN_MESSAGE}")
        return args

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, platforms: list[str]) -> list[str]:
        for platform in platforms:
            if len(platform) > MAX_PLATFORM_LENGTH or not PLATFORM_RE.match(platform):
                raise ValueError(f"{platform!r} is not a platform such as linux/amd64")
        return platforms

    @field_validator("config")
    @classmethod
    def _config_is_toml(cls, config: str | None) -> str | None:
        if config is not None:
            try:
                document = tomllib.loads(config)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"not valid TOML: {err}") from None
            except RecursionError:  # the parser recurses per level of nesting
                raise ValueError(
                    f"nested deeper than {MAX_CONFIG_DEPTH} levels of tables and arrays"
                ) from None
            if _depth(document) > MAX_CONFIG_DEPTH:
                # buildkitd.toml is a few levels deep; rendering a deeper one would recurse
                # as deep again.
                raise ValueError(
                    f"nested deeper than {MAX_CONFIG_DEPTH} levels of tables and arrays"
                )
            # Only the operator can parse TOML (CEL cannot), so a refused key makes the
            # Builder Invalid rather than being refused at apply.
            problem = config_problem(document)
            if problem:
                raise ValueError(problem)
        return config


def _depth(value: Any) -> int:
    """Levels of tables and arrays in a parsed TOML document, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
