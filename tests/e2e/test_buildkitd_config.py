"""Every buildkitd.toml setting of the Builder contract is accepted by the real buildkitd and
takes effect.

buildkitd decodes its config with go-toml without rejecting unknown keys, so a daemon that
starts proves only that the file parses. Each setting is also checked where it shows, in
`buildctl debug workers -v` (platforms, GC policy, a worker label from the raw config, the
snapshotter an extra buildkitd arg chose), or by what it does (max-parallelism serialises
steps; images of docker.io come from the mirror, over plain HTTP).

The mirror must not be on loopback: BuildKit always speaks plain HTTP to loopback registries,
which would hide whether insecureRegistries works. It serves from a network namespace the
test makes (IsolatedNetwork), at an address of 198.18.0.0/15 that buildkitd reaches through a
veth pair. Where namespaces cannot be made, only the test that pulls from the mirror is
skipped, saying why; the Builders are rendered with the mirror's address either way.
"""

from __future__ import annotations

import itertools
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from buildkit_e2e import (
    Daemon,
    DaemonPool,
    IsolatedNetwork,
    NetnsUnavailable,
    Registry,
    RenderBuilders,
    Rendered,
    host_rootfs,
    image_from_rootfs,
    netns_unavailable,
    oci_image_files,
    parse_size,
    parse_workers_verbose,
    write_context,
)

pytestmark = pytest.mark.e2e

CACHE_SIZE = "10Gi"
CACHE_BYTES = 10 * 2**30
PLATFORMS = ["linux/amd64", "linux/arm64"]
RAW_LABEL = ("e2e.buildkit.dev/raw-config", "merged")
# The raw config sets values the spec also sets: the spec's must win.
RAW_CONFIG = f"""\
[log]
format = "json"

[worker.oci]
max-parallelism = 8
reservedSpace = "1GB"
labels = {{ "{RAW_LABEL[0]}" = "{RAW_LABEL[1]}" }}

[history]
maxEntries = 50
"""
BASE_IMAGE = "docker.io/library/e2e-base:latest"
MARKER = "served by the mirror\n"
MIRROR_PORT = 5000  # the namespace is the mirror's alone: any port is free


@pytest.fixture(scope="module")
def mirror_network() -> IsolatedNetwork:
    """The mirror's network namespace, named and addressed but not made yet."""
    return IsolatedNetwork()


@pytest.fixture(scope="module")
def mirror_address(mirror_network: IsolatedNetwork) -> str:
    return f"{mirror_network.inner_address}:{MIRROR_PORT}"


def _skip_without_netns(reason: str) -> NoReturn:
    message = f"the mirror needs a network namespace of its own: {reason}"
    print(f"\ne2e: SKIP: {message}", file=sys.stderr)
    pytest.skip(message)


@pytest.fixture(scope="module")
def registry(
    mirror_network: IsolatedNetwork,
    mirror_address: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    """The mirror, serving in ``mirror_network``; the namespace, the veth pair and the server
    are gone after the module, whatever happened."""
    reason = netns_unavailable()
    if reason is not None:
        _skip_without_netns(reason)
    request.getfixturevalue("runtime_deps")  # iproute2
    workdir = tmp_path_factory.mktemp("mirror")
    rootfs = host_rootfs(workdir / "rootfs")
    (rootfs / "etc" / "e2e-marker").write_text(MARKER)
    images = {"library/e2e-base:latest": image_from_rootfs(rootfs)}
    try:
        mirror_network.create()
    except NetnsUnavailable as err:
        _skip_without_netns(str(err))
    try:
        host = mirror_network.inner_address
        with Registry(host, MIRROR_PORT, images, workdir / "server", mirror_network) as server:
            assert server.address == mirror_address
            yield server
    finally:
        mirror_network.destroy()


@pytest.fixture(scope="module")
def builders(render_builders: RenderBuilders, mirror_address: str) -> dict[str, Rendered]:
    return render_builders(
        {
            "config": {
                "rootless": False,
                "cache": {"size": CACHE_SIZE},
                "buildkitd": {
                    "args": ["--oci-worker-snapshotter=native"],
                    "maxParallelism": 1,
                    "platforms": PLATFORMS,
                    "registryMirrors": {"docker.io": [mirror_address]},
                    "insecureRegistries": [mirror_address],
                    "config": RAW_CONFIG,
                },
            },
            # The same, without maxParallelism: shows the parallelism check can fail.
            "unlimited": {"rootless": False, "cache": {"size": CACHE_SIZE}},
        }
    )


@pytest.fixture(scope="module")
def daemon(builders: dict[str, Rendered], daemons: DaemonPool) -> Daemon:
    return daemons.start(builders["config"])


def test_rendered_toml(builders: dict[str, Rendered], mirror_address: str) -> None:
    """What was handed to buildkitd (parsed independently of the renderer)."""
    text = builders["config"].config_toml()
    print(f"\ne2e: buildkitd.toml under test:\n{text}")
    config: dict[str, Any] = tomllib.loads(text)
    oci = config["worker"]["oci"]
    assert oci["max-parallelism"] == 1
    assert oci["platforms"] == PLATFORMS
    assert oci["labels"] == dict([RAW_LABEL])
    assert config["registry"]["docker.io"]["mirrors"] == [mirror_address]
    assert config["registry"][mirror_address]["http"] is True
    assert config["log"]["format"] == "json"


def test_config_accepted(daemon: Daemon) -> None:
    log = daemon.log()
    assert "failed to parse config" not in log
    assert daemon.process is not None and daemon.process.poll() is None
    # log.format from the raw config took effect: buildkitd logs JSON.
    lines = [line for line in log.splitlines() if line.startswith("{")]
    assert lines, f"no JSON log lines; [log] format from the raw config was lost:\n{log[-2000:]}"


def test_workers_show_platforms_gc_args_and_raw_labels(daemon: Daemon) -> None:
    output = daemon.client().run("debug", "workers", "-v").stdout
    print(f"\ne2e: buildctl debug workers -v:\n{output}")
    (worker,) = parse_workers_verbose(output)

    # platforms: the configured ones (BuildKit adds the amd64 micro-architecture variants).
    assert [p for p in worker.platforms if p.count("/") == 1] == PLATFORMS

    # buildkitd.args, appended to the operator's flags.
    assert worker.labels["org.mobyproject.buildkit.worker.snapshotter"] == "native"

    # The raw config's worker label, merged into the same [worker.oci] table.
    assert worker.labels.get(RAW_LABEL[0]) == RAW_LABEL[1]

    # GC limits derived from cache.size; the raw reservedSpace = "1GB" lost to them.
    expected = {
        "Reserved space": CACHE_BYTES * 0.10,
        "Maximum used space": CACHE_BYTES * 0.75,
        "Minimum free space": CACHE_BYTES * 0.20,
    }
    catch_all = [rule for rule in worker.gc_rules if rule.get("All") == "true"]
    assert catch_all, worker.gc_rules
    for key, value in expected.items():
        shown = parse_size(catch_all[-1][key])
        assert abs(shown - value) <= value * 1e-6, (key, catch_all[-1][key], value)
    for used, free in [
        (parse_size(r["Maximum used space"]), r.get("Minimum free space"))
        for r in worker.gc_rules
        if "Maximum used space" in r and "Minimum free space" in r
    ]:
        # No rule lets the cache grow past 75% of the volume.
        assert used <= CACHE_BYTES * 0.75 * (1 + 1e-6), (used, free)


PARALLEL_DOCKERFILE = (
    """\
FROM scratch AS base
COPY --from=rootfs / /
"""
    + "".join(
        f"""
FROM base AS {stage}
RUN echo {stage} > /name && date +%s%N > /start && sleep 1 && date +%s%N > /end
"""
        for stage in ("one", "two", "three")
    )
    + """
FROM scratch
"""
    + "".join(
        f"COPY --from={stage} /start /{stage}.start\nCOPY --from={stage} /end /{stage}.end\n"
        for stage in ("one", "two", "three")
    )
)


def _run_intervals(daemon: Daemon, workdir: Path) -> list[tuple[int, int]]:
    rootfs = host_rootfs(workdir / "rootfs")
    context = write_context(workdir / "context", PARALLEL_DOCKERFILE, {})
    out = workdir / "out.tar"
    daemon.client().build(
        context,
        f"type=oci,dest={out}",
        opts={"context:rootfs": "local:rootfs"},
        locals_={"rootfs": rootfs},
    )
    files = oci_image_files(out)
    return sorted(
        (int(files[f"/{s}.start"]), int(files[f"/{s}.end"])) for s in ("one", "two", "three")
    )


def _overlaps(intervals: list[tuple[int, int]]) -> bool:
    return any(b_start < a_end for (_, a_end), (b_start, _) in itertools.pairwise(intervals))


def test_max_parallelism_serialises_steps(
    daemon: Daemon, builders: dict[str, Rendered], daemons: DaemonPool, tmp_path: Path
) -> None:
    limited = _run_intervals(daemon, tmp_path / "limited")
    unlimited = _run_intervals(daemons.start(builders["unlimited"]), tmp_path / "unlimited")
    print(f"\ne2e: RUN intervals (ns) with max-parallelism 1: {limited}; without: {unlimited}")
    assert _overlaps(unlimited), "without max-parallelism the three RUN steps did not overlap"
    assert not _overlaps(limited), "with max-parallelism = 1 two RUN steps ran at once"


def test_registry_mirror_over_plain_http(
    daemon: Daemon, registry: Registry, tmp_path: Path
) -> None:
    """docker.io images come from the mirror, which speaks only plain HTTP: the pull works
    only if both the mirror and the insecure (HTTP) setting took effect."""
    context = write_context(
        tmp_path / "context",
        f"FROM {BASE_IMAGE}\nRUN cat /etc/e2e-marker > /from-run\n",
        {},
    )
    out = tmp_path / "out.tar"
    build = daemon.client().build(context, f"type=oci,dest={out}")
    files = oci_image_files(out)
    assert files["/from-run"] == MARKER.encode()
    pulled = [path for method, path in registry.requests if "/manifests/" in path]
    print(
        f"\ne2e: mirror {registry.address} got {registry.requests} "
        f"after {registry.tls_attempts} HTTPS attempt(s); build {build.seconds:.1f}s"
    )
    assert any("/v2/library/e2e-base/manifests/latest" in path for path in pulled)
