"""The cache claim of a Builder on the real node is a real local volume: it outlives the pod,
and the next build of the same context is served from it."""

from __future__ import annotations

import secrets
from pathlib import Path

from buildkit_e2e import check_run_output, oci_image_files, run_build_inputs
from node_helpers import (
    Host,
    connect,
    delete_pod_and_wait,
    ready_builder,
    report,
)
from operator_process import OperatorProcess

from localcluster.api import Api
from localnode.node import LocalNode

# RUN steps worth caching: a loop that takes the cold build some seconds of CPU.
LOOPS = 3_000_000


def test_cache_survives_pod_deletion(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    host.require_rootless()
    name = "cached"
    ready_builder(api, node, node_namespace, name, {})
    inputs = run_build_inputs(tmp_path / "build", f"cache {secrets.token_hex(4)}", loops=LOOPS)

    def build(label: str) -> tuple[float, dict[str, bool]]:
        conn = connect(node, api, node_namespace, name, tmp_path / label)
        client = conn.client(node, buildctl_bin)
        out = tmp_path / f"{label}.tar"
        result = client.build(
            inputs.context, f"type=oci,dest={out}", opts=inputs.opts, locals_=inputs.locals_
        )
        check_run_output(oci_image_files(out), inputs)
        return result.seconds, result.steps()

    cold, cold_steps = build("cold")
    delete_pod_and_wait(api, node_namespace, name, node)
    warm, warm_steps = build("warm")
    run_steps = [step for step in warm_steps if step.startswith("[work") and "RUN" in step]
    assert run_steps, warm_steps
    assert all(warm_steps[step] for step in run_steps), warm_steps
    assert not any(cold_steps.get(step) for step in run_steps), cold_steps
    report(
        f"build through the Service: cold {cold:.1f}s, after the pod was replaced "
        f"{warm:.1f}s (RUN steps CACHED); cold/warm ratio {cold / warm:.1f}"
    )
    assert warm < cold
