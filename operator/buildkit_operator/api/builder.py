"""A Builder as the operator sees it (identity plus a validated spec), and the errors of
one it cannot act on, named by field so that a person can fix them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .identity import API_VERSION, KIND
from .object_names import dns_subdomain
from .spec import BuilderSpec

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_name(name: str) -> str:
    return dns_subdomain(name, "name")


def _check_namespace(namespace: str) -> str:
    if len(namespace) > 63 or not _DNS_LABEL_RE.match(namespace):
        raise ValueError(f"{namespace!r} is not a valid namespace name")
    return namespace


class Builder(BaseModel):
    """A Builder as the operator sees it: identity plus a validated spec."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, AfterValidator(_check_name)]
    namespace: Annotated[str, AfterValidator(_check_namespace)] = "default"
    uid: str | None = None
    generation: int | None = None
    spec: BuilderSpec

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any], *, namespace: str = "default") -> Builder:
        """Validate a Builder object as found in YAML or returned by the API server."""
        if not isinstance(obj, Mapping):
            raise InvalidBuilder(["(document): must be a mapping"])
        if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
            raise InvalidBuilder(
                [
                    f"apiVersion/kind: expected {API_VERSION} {KIND}, "
                    f"got {obj.get('apiVersion')} {obj.get('kind')}"
                ]
            )
        meta = obj.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise InvalidBuilder(["metadata: must be a mapping"])
        spec = obj.get("spec")
        try:
            return cls(
                name=meta.get("name", ""),
                namespace=meta.get("namespace") or namespace,
                uid=meta.get("uid"),
                generation=meta.get("generation"),
                spec=BuilderSpec.model_validate({} if spec is None else spec),
            )
        except ValidationError as err:
            raise InvalidBuilder(describe_errors(err)) from None


class InvalidBuilder(ValueError):
    """A Builder the operator cannot act on; ``problems`` name the fields."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


_LOCATION_ROOTS = {"name": "metadata.name", "namespace": "metadata.namespace"}


def describe_errors(err: ValidationError) -> list[str]:
    """Turn pydantic errors into 'spec.cache.size: <message>' lines a person can act on."""
    problems = []
    for error in err.errors(include_url=False):
        loc: list[str | int] = list(error["loc"])
        if err.title == BuilderSpec.__name__:
            loc = ["spec", *loc]
        elif loc and isinstance(loc[0], str) and loc[0] in _LOCATION_ROOTS:
            loc = [_LOCATION_ROOTS[loc[0]], *loc[1:]]
        # Annotated validators report their own function names; drop them.
        loc = [part for part in loc if not str(part).startswith("function-")]
        path = ""
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{path or 'spec'}: {message}")
    return problems
