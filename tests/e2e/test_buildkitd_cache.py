"""The cache outlives the daemon: a restarted buildkitd on the same cache volume serves the
same build entirely from cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from buildkit_e2e import (
    DaemonPool,
    RenderBuilders,
    check_run_output,
    oci_image_files,
    run_build_inputs,
)

pytestmark = pytest.mark.e2e


def test_restarted_daemon_builds_from_cache(
    render_builders: RenderBuilders, daemons: DaemonPool, tmp_path: Path
) -> None:
    rendered = render_builders({"cache": {"rootless": False, "cache": {"size": "10Gi"}}})["cache"]
    inputs = run_build_inputs(tmp_path / "inputs", "the same context twice\n")
    layout = daemons.layout()  # the cache volume (PVC) both daemons mount

    first = daemons.start(rendered, layout=layout)
    cold = first.client().build(
        inputs.context,
        f"type=oci,dest={tmp_path / 'cold.tar'}",
        opts=inputs.opts,
        locals_=inputs.locals_,
    )
    check_run_output(oci_image_files(tmp_path / "cold.tar"), inputs)
    cold_steps = cold.steps()
    assert cold_steps, f"no Dockerfile steps in the progress output:\n{cold.output}"
    assert not any(cold_steps.values()), f"a fresh cache served steps: {cold_steps}"
    first.stop()

    second = daemons.start(rendered, layout=layout)
    usage = second.client().run("du", "--verbose").stdout
    assert "ID:" in usage, f"buildctl du shows no cache records after the restart:\n{usage}"
    warm = second.client().build(
        inputs.context,
        f"type=oci,dest={tmp_path / 'warm.tar'}",
        opts=inputs.opts,
        locals_=inputs.locals_,
    )
    warm_steps = warm.steps()
    assert warm_steps.keys() == cold_steps.keys(), (cold_steps, warm_steps)
    not_cached = [step for step, cached in warm_steps.items() if not cached]
    assert not not_cached, f"steps rebuilt after the restart: {not_cached}\n{warm.output}"
    assert oci_image_files(tmp_path / "warm.tar") == oci_image_files(tmp_path / "cold.tar")

    ratio = cold.seconds / warm.seconds if warm.seconds else float("inf")
    print(
        f"\ne2e: cache across a restart: cold build {cold.seconds:.2f}s, warm build "
        f"{warm.seconds:.2f}s (cold/warm {ratio:.1f}x); {len(warm_steps)} steps all CACHED"
    )
