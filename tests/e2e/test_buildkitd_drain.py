"""What a daemon says about the builds it runs, against a real buildkitd over mutual TLS:
the operator's question (activity.ask: BuildKit's build history) and the pod's preStop hook
both see a build in flight, the hook waits for its end, and neither waits on an idle daemon.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from buildkit_e2e import (
    Daemon,
    DaemonPool,
    RenderBuilders,
    host_rootfs,
    oci_image_files,
    write_context,
)

from buildkit_operator.buildkit.activity import Target, ask

pytestmark = pytest.mark.e2e

SECONDS = 10
DOCKERFILE = f"""\
FROM scratch AS base
COPY --from=rootfs / /
FROM base AS work
RUN sleep {SECONDS} && echo done > /done
FROM scratch
COPY --from=work /done /done
"""


@pytest.fixture(scope="module")
def daemon(render_builders: RenderBuilders, daemons: DaemonPool) -> Daemon:
    rendered = render_builders(
        {"drain": {"rootless": False, "cache": {"type": "ephemeral", "size": "5Gi"}}}
    )
    return daemons.start(rendered["drain"])


def _target(daemon: Daemon, into: Path) -> Target:
    certs = daemon.rendered.client_certs(into)
    assert certs.cert is not None and certs.key is not None
    return Target(
        "drain-0",
        daemon.address.removeprefix("tcp://"),
        certs.ca.read_bytes(),
        certs.cert.read_bytes(),
        certs.key.read_bytes(),
        "localhost",
    )


def test_a_build_in_flight_is_seen_and_waited_for(daemon: Daemon, tmp_path: Path) -> None:
    target = _target(daemon, tmp_path / "client")
    idle = ask(target)
    assert idle.known and idle.in_flight == 0, idle
    began = time.monotonic()
    hook = daemon.run_pre_stop()
    assert hook.returncode == 0 and time.monotonic() - began < 5, hook

    context = write_context(tmp_path / "context", DOCKERFILE, {})
    rootfs = host_rootfs(tmp_path / "rootfs")
    out, log = tmp_path / "out.tar", tmp_path / "build.log"
    client = daemon.client()
    command = [
        *client.global_args(), "build", "--progress=plain", "--frontend", "dockerfile.v0",
        "--local", f"context={context}", "--local", f"dockerfile={context}",
        "--local", f"rootfs={rootfs}", "--opt", "context:rootfs=local:rootfs",
        "--output", f"type=oci,dest={out}",
    ]  # fmt: skip
    with open(log, "wb") as sink:
        build = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "RUN sleep" not in log.read_text(errors="replace"):
            assert build.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the slow step never started"
            time.sleep(0.2)
        busy = ask(target)
        assert busy.in_flight == 1 and busy.building, busy

        began = time.monotonic()
        hook = daemon.run_pre_stop()
        waited = time.monotonic() - began
        assert hook.returncode == 0, hook
        # The hook returned once BuildKit had recorded the build complete.
        after = ask(target)
        assert after.in_flight == 0 and after.last_build is not None, after
        assert build.wait(timeout=30) == 0, log.read_text(errors="replace")[-3000:]
        assert oci_image_files(out)["/done"] == b"done\n"
        assert waited >= SECONDS / 2, waited
        print(f"\ne2e: preStop waited {waited:.1f}s for a build in flight")
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
