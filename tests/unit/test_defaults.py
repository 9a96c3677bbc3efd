"""Install-wide defaults: what a Builder gets where its spec is silent, what it keeps where it
speaks, and what its status says it got. Pure: no cluster; the command line is called in
this interpreter (cli_in_process), as the installed entry point calls it."""

from __future__ import annotations

import json
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from buildkit_operator.api import DEFAULT_IMAGE_ROOTFUL, DEFAULT_IMAGE_ROOTLESS, Builder
from buildkit_operator.api.defaults import (
    DEFAULTS,
    InvalidDefaults,
    effective_status,
    make_defaults,
)
from buildkit_operator.render import render_builder
from cli_in_process import run_cli

# The contract: the default image is a pinned moby/buildkit:<version> or <version>-rootless.
PINNED_TAG = DEFAULT_IMAGE_ROOTFUL.rsplit(":", 1)[1]
MIRROR = "registry.internal/moby/buildkit"


def make(spec: dict[str, Any] | None = None, name: str = "team-a") -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": name, "namespace": "ci", "uid": "u-1"},
            # TLS material is not what these tests are about.
            "spec": {"tls": {"mode": "disabled"}, **(spec or {})},
        }
    )


def objects(builder: Builder) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in render_builder(builder)}


def container(builder: Builder) -> dict[str, Any]:
    pod = objects(builder)[f"Deployment/{builder.name}-0"]["spec"]["template"]["spec"]
    return dict(pod["containers"][0])


def claim(builder: Builder) -> dict[str, Any]:
    return dict(objects(builder)[f"PersistentVolumeClaim/{builder.name}-cache-0"]["spec"])


def toml(builder: Builder) -> dict[str, Any]:
    return tomllib.loads(
        objects(builder)[f"ConfigMap/{builder.name}-config"]["data"]["buildkitd.toml"]
    )


def test_without_defaults_nothing_changes() -> None:
    """An operator run without --default-… flags renders what it always rendered, so
    upgrading to a version with defaults rolls no daemon."""
    for spec in ({}, {"rootless": False}, {"image": "example.com/bk:1", "cache": {"size": "5Gi"}}):
        builder = make(spec)
        assert render_builder(DEFAULTS.apply(builder)) == render_builder(builder)
    assert container(DEFAULTS.apply(make()))["image"] == DEFAULT_IMAGE_ROOTLESS
    assert claim(DEFAULTS.apply(make()))["resources"]["requests"]["storage"] == "20Gi"


def test_image_repository_keeps_the_pinned_tags() -> None:
    defaults = make_defaults(image_repository=MIRROR)
    assert container(defaults.apply(make()))["image"] == f"{MIRROR}:{PINNED_TAG}-rootless"
    rootful = defaults.apply(make({"rootless": False}))
    assert container(rootful)["image"] == f"{MIRROR}:{PINNED_TAG}"
    # A Builder naming its image keeps it.
    own = defaults.apply(make({"image": "example.com/bk:own"}))
    assert container(own)["image"] == "example.com/bk:own"


def test_whole_image_references_win_over_the_repository() -> None:
    defaults = make_defaults(
        image_repository=MIRROR,
        image_rootless="registry.internal/bk@sha256:" + "a" * 64,
        image_rootful="",
    )
    assert container(defaults.apply(make()))["image"] == "registry.internal/bk@sha256:" + "a" * 64
    assert container(defaults.apply(make({"rootless": False})))["image"] == f"{MIRROR}:{PINNED_TAG}"


def test_cache_size_and_storage_class() -> None:
    defaults = make_defaults(cache_size="50Gi", storage_class_name="fast-ssd")
    spec = claim(defaults.apply(make()))
    assert spec["resources"]["requests"]["storage"] == "50Gi"
    assert spec["storageClassName"] == "fast-ssd"
    # BuildKit's GC limits follow the size the volume really has (75% of 50Gi at most).
    assert toml(defaults.apply(make()))["worker"]["oci"]["maxUsedSpace"] == str(
        int(50 * 1024**3 * 0.75)
    )
    # An ephemeral cache is limited to the default size too.
    ephemeral = defaults.apply(make({"cache": {"type": "ephemeral"}}))
    pod = objects(ephemeral)["Deployment/team-a-0"]["spec"]["template"]["spec"]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "50Gi"}} in pod["volumes"]

    own = claim(defaults.apply(make({"cache": {"size": "5Gi", "storageClassName": "standard"}})))
    assert own["resources"]["requests"]["storage"] == "5Gi"
    assert own["storageClassName"] == "standard"


def test_resources_are_taken_whole() -> None:
    defaults = make_defaults(resources={"requests": {"cpu": "1", "memory": "2Gi"}})
    assert container(defaults.apply(make()))["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"}
    }
    own = defaults.apply(make({"resources": {"limits": {"memory": "8Gi"}}}))
    assert container(own)["resources"] == {"limits": {"memory": "8Gi"}}


def test_registry_mirrors_merge_per_registry() -> None:
    defaults = make_defaults(
        registry_mirrors=["docker.io=mirror.internal:5000", "ghcr.io=a.internal,b.internal"]
    )
    registries = toml(defaults.apply(make()))["registry"]
    assert registries == {
        "docker.io": {"mirrors": ["mirror.internal:5000"]},
        "ghcr.io": {"mirrors": ["a.internal", "b.internal"]},
    }
    own = defaults.apply(make({"buildkitd": {"registryMirrors": {"docker.io": ["mine:5000"]}}}))
    assert toml(own)["registry"] == {
        "docker.io": {"mirrors": ["mine:5000"]},
        "ghcr.io": {"mirrors": ["a.internal", "b.internal"]},
    }


def test_a_changed_default_changes_the_pod_template() -> None:
    """What makes a default change roll the daemons: the rendered Deployment differs."""
    before = objects(make_defaults(image_repository=MIRROR).apply(make()))["Deployment/team-a-0"]
    after = objects(make_defaults(image_repository="other.internal/bk").apply(make()))[
        "Deployment/team-a-0"
    ]
    assert before["spec"]["template"] != after["spec"]["template"]


def test_status_shows_what_was_used() -> None:
    defaults = make_defaults(image_repository=MIRROR, storage_class_name="fast-ssd")
    assert effective_status(defaults.apply(make())) == {
        "image": f"{MIRROR}:{PINNED_TAG}-rootless",
        "cache": {"size": "20Gi", "storageClassName": "fast-ssd"},
    }
    own = defaults.apply(make({"image": "example.com/bk:own", "cache": {"size": "5Gi"}}))
    assert effective_status(own) == {
        "image": "example.com/bk:own",
        "cache": {"size": "5Gi", "storageClassName": "fast-ssd"},
    }
    # No storage class anywhere: the cluster's default class, shown by leaving it out.
    assert effective_status(DEFAULTS.apply(make())) == {
        "image": DEFAULT_IMAGE_ROOTLESS,
        "cache": {"size": "20Gi"},
    }


@pytest.mark.parametrize(
    ("kwargs", "flag", "words"),
    [
        ({"cache_size": "50Gib"}, "--default-cache-size", "not a quantity"),
        ({"cache_size": "100Mi"}, "--default-cache-size", "256Mi"),
        ({"storage_class_name": "Fast_SSD"}, "--default-storage-class", "not a valid"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "--default-resources", "quantity"),
        ({"resources": {"requests": {"gpu": "1"}}}, "--default-resources", "not a resource"),
        ({"registry_mirrors": ["docker.io"]}, "--default-registry-mirror", "REGISTRY=HOST"),
        ({"registry_mirrors": ["docker.io="]}, "--default-registry-mirror", "REGISTRY=HOST"),
        ({"image_repository": "a b"}, "--default-image-repository", "whitespace"),
    ],
)
def test_bad_defaults_name_their_flag(kwargs: dict[str, Any], flag: str, words: str) -> None:
    with pytest.raises(InvalidDefaults) as raised:
        make_defaults(**kwargs)
    assert str(raised.value).startswith(flag) and words in str(raised.value), raised.value


# --- the command line ---------------------------------------------------------------------


def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, stdin=stdin)


BUILDER = yaml.safe_dump(
    {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": "team-a", "namespace": "ci"},
        "spec": {"tls": {"mode": "disabled"}},
    }
)


def test_render_takes_the_defaults_the_operator_runs_with() -> None:
    result = run(
        "render", "-f", "-",
        "--default-image-repository", MIRROR,
        "--default-storage-class", "fast-ssd",
        "--default-cache-size", "40Gi",
        "--default-resources", json.dumps({"limits": {"memory": "4Gi"}}),
        "--default-registry-mirror", "docker.io=mirror.internal:5000",
        stdin=BUILDER,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(result.stdout)}
    c = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"{MIRROR}:{PINNED_TAG}-rootless"
    assert c["resources"] == {"limits": {"memory": "4Gi"}}
    pvc = docs["PersistentVolumeClaim"]["spec"]
    assert pvc["storageClassName"] == "fast-ssd"
    assert pvc["resources"]["requests"]["storage"] == "40Gi"
    assert 'mirrors = ["mirror.internal:5000"]' in docs["ConfigMap"]["data"]["buildkitd.toml"]


def test_a_bad_default_is_one_line_and_exit_status_2() -> None:
    for args in (
        ["--default-cache-size", "lots"],
        ["--default-resources", "{not json"],
        ["--default-resources", "[1]"],
    ):
        result = run("render", "-f", "-", *args, stdin=BUILDER)
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and args[0] in result.stderr, result.stderr
