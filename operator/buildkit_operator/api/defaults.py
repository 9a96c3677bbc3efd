"""Install-wide defaults: what every Builder gets where its spec does not say otherwise.

A platform admin sets them once (chart values ``builderDefaults``, passed as
``buildkit-operator run --default-…`` flags) instead of editing every Builder: an air-gapped
cluster mirrors the buildkit image into its own registry, another cluster wants a storage
class or cache size of its own. They are filled into the spec before rendering, so a default
that changes changes the rendered objects, and the daemons roll exactly as for a spec change.
The status shows what was used (``status.image``, ``status.cache``), so nobody has to know
the operator's flags to know what a Builder runs. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .builder import Builder, describe_errors
from .buildkitd import BUILDKIT_VERSION, DEFAULT_IMAGE_REPOSITORY
from .cache import DEFAULT_CACHE_SIZE, CacheSpec
from .pod import ResourceRequirements
from .status import CacheStatus


class InvalidDefaults(ValueError):
    """A default the operator cannot use; the message names the flag."""


@dataclass(frozen=True)
class Defaults:
    """The operator's defaults. ``Defaults()`` is what the API reference documents."""

    image_repository: str = DEFAULT_IMAGE_REPOSITORY
    # Whole image references, for a tag or digest of the admin's choosing; they win over
    # image_repository (whose tags are the operator's pinned buildkit version).
    image_rootful: str | None = None
    image_rootless: str | None = None
    cache_size: str = DEFAULT_CACHE_SIZE
    storage_class_name: str | None = None
    resources: ResourceRequirements | None = None
    registry_mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def image(self, rootless: bool) -> str:
        if rootless:
            return self.image_rootless or f"{self.image_repository}:{BUILDKIT_VERSION}-rootless"
        return self.image_rootful or f"{self.image_repository}:{BUILDKIT_VERSION}"

    def apply(self, builder: Builder) -> Builder:
        """``builder`` with every field it leaves unset filled from these defaults.

        Registry mirrors merge per registry: the Builder's list for a registry replaces the
        default one, registries it does not name keep the defaults. Resources are taken as a
        whole, never merged: a Builder that sets them said all it wants.
        """
        spec = builder.spec
        cache = spec.cache.model_copy(
            update={
                "size": spec.cache.size or self.cache_size,
                "storage_class_name": spec.cache.storage_class_name or self.storage_class_name,
            }
        )
        mirrors = {
            **{registry: list(hosts) for registry, hosts in self.registry_mirrors.items()},
            **spec.buildkitd.registry_mirrors,
        }
        filled = spec.model_copy(
            update={
                "image": spec.image or self.image(spec.rootless_image),
                "cache": cache,
                "buildkitd": spec.buildkitd.model_copy(update={"registry_mirrors": mirrors}),
                "resources": spec.resources if spec.resources is not None else self.resources,
            }
        )
        return builder.model_copy(update={"spec": filled})


DEFAULTS = Defaults()


def effective_status(builder: Builder) -> dict[str, Any]:
    """``status.image`` and ``status.cache`` of a Builder whose defaults were applied."""
    spec = builder.spec
    cache = CacheStatus(
        size=spec.cache.effective_size, storage_class_name=spec.cache.storage_class_name
    )
    return {
        "image": spec.effective_image,
        "cache": cache.model_dump(by_alias=True, exclude_none=True),
    }


def _image(value: str | None, flag: str) -> str | None:
    if value is None or value == "":
        return None
    if value != value.strip() or any(c.isspace() for c in value):
        raise InvalidDefaults(f"{flag}: {value!r} must not contain whitespace")
    return value


def parse_mirrors(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``REGISTRY=HOST[,HOST…]`` items, as ``--default-registry-mirror`` takes them."""
    mirrors: dict[str, tuple[str, ...]] = {}
    for value in values:
        registry, sep, hosts = value.partition("=")
        listed = tuple(h.strip() for h in hosts.split(",") if h.strip())
        if not sep or not registry.strip() or not listed:
            raise InvalidDefaults(
                f"--default-registry-mirror: {value!r} is not REGISTRY=HOST[,HOST...] "
                "(e.g. docker.io=mirror.internal:5000)"
            )
        mirrors[registry.strip()] = listed
    return mirrors


def make_defaults(
    *,
    image_repository: str | None = None,
    image_rootful: str | None = None,
    image_rootless: str | None = None,
    cache_size: str | None = None,
    storage_class_name: str | None = None,
    resources: Mapping[str, Any] | None = None,
    registry_mirrors: Sequence[str] = (),
) -> Defaults:
    """Defaults from command-line values (empty means unset), checked by the same rules as
    the Builder fields they stand in for, so a bad default stops the operator at startup
    rather than making every Builder Invalid."""
    try:
        cache = CacheSpec.model_validate(
            {"size": cache_size or None, "storageClassName": storage_class_name or None}
        )
    except ValidationError as err:
        flags = {"size": "--default-cache-size", "storageClassName": "--default-storage-class"}
        problem = describe_errors(err)[0]
        key, _, message = problem.partition(": ")
        raise InvalidDefaults(f"{flags.get(key, key)}:{message and ' ' + message}") from None
    try:
        checked_resources = ResourceRequirements.model_validate(resources) if resources else None
    except ValidationError as err:
        raise InvalidDefaults(f"--default-resources: {'; '.join(describe_errors(err))}") from None
    return Defaults(
        image_repository=_image(image_repository, "--default-image-repository")
        or DEFAULT_IMAGE_REPOSITORY,
        image_rootful=_image(image_rootful, "--default-image-rootful"),
        image_rootless=_image(image_rootless, "--default-image-rootless"),
        cache_size=cache.size or DEFAULT_CACHE_SIZE,
        storage_class_name=cache.storage_class_name,
        resources=checked_resources,
        registry_mirrors=parse_mirrors(registry_mirrors),
    )
