"""The rendered rootless buildkitd, run as the -rootless image runs it: uid 1000, under
`rootlesskit buildkitd`, with --oci-worker-no-process-sandbox.

Needs unprivileged user namespaces, newuidmap/newgidmap and subordinate id ranges for uid
1000 (hack/install-runtime-deps.sh). Where the machine cannot create the namespace, the test
is skipped with rootlesskit's own error; a daemon that fails once rootlesskit works fails it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from buildkit_e2e import (
    ROOTLESS_UID,
    Buildctl,
    ClientCerts,
    Daemon,
    DaemonPool,
    RenderBuilders,
    Rendered,
    host_rootfs,
    oci_image_files,
    parse_workers_verbose,
    tls_handshake,
    write_context,
)

pytestmark = pytest.mark.e2e

DOCKERFILE = """\
FROM scratch AS base
COPY --from=rootfs / /

FROM base AS work
COPY input.txt /input.txt
RUN cat /proc/self/uid_map > /uid_map && sha256sum /input.txt > /input.sha256

FROM scratch
COPY --from=work /uid_map /input.sha256 /out/
"""


def rootlesskit_problem() -> str | None:
    """Why uid 1000 cannot enter a rootlesskit user namespace here, or None if it can."""
    with tempfile.TemporaryDirectory(prefix="bke2e-probe-") as home:
        os.chown(home, ROOTLESS_UID, ROOTLESS_UID)
        command = [
            "setpriv",
            f"--reuid={ROOTLESS_UID}",
            f"--regid={ROOTLESS_UID}",
            "--clear-groups",
            "--",
            "rootlesskit",
            "cat",
            "/proc/self/uid_map",
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"{' '.join(command)}: {err}"
    if result.returncode != 0:
        return f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def rendered(render_builders: RenderBuilders) -> Rendered:
    return render_builders({"rootless": {"rootless": True, "cache": {"size": "5Gi"}}})["rootless"]


@pytest.fixture(scope="module")
def daemon(rendered: Rendered, daemons: DaemonPool) -> Daemon:
    problem = rootlesskit_problem()
    if problem:
        message = f"rootless buildkitd cannot run on this machine: {problem}"
        print(f"\ne2e: SKIP {message}")
        pytest.skip(message)
    return daemons.start(rendered)


def test_rendered_for_the_rootless_image(rendered: Rendered) -> None:
    container = rendered.container()
    assert "--oci-worker-no-process-sandbox" in container["args"]
    assert "unix:///run/user/1000/buildkit/buildkitd.sock" in container["args"]
    assert container["securityContext"].get("runAsUser") == ROOTLESS_UID
    assert not container["securityContext"].get("privileged")


def test_runs_as_uid_1000_without_process_sandbox(daemon: Daemon) -> None:
    assert daemon.process is not None
    group = daemon.process.pid
    uids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        name = status.split("\n", 1)[0].split()[-1]
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[2])
        uids[f"{name}[{entry.name}]"] = uid
    print(f"\ne2e: rootless processes and their effective uids: {uids}")
    assert any(name.startswith("buildkitd") for name in uids), uids
    assert set(uids.values()) == {ROOTLESS_UID}, uids

    (worker,) = parse_workers_verbose(daemon.client().run("debug", "workers", "-v").stdout)
    assert worker.labels["org.mobyproject.buildkit.worker.oci.process-mode"] == "no-sandbox"
    print(f"e2e: rootless worker labels: {worker.labels}")


def test_probes_reach_the_daemon(daemon: Daemon) -> None:
    """The readiness and liveness probes, run as the kubelet would, inside the container."""
    for kind in ("readinessProbe", "livenessProbe"):
        result = daemon.run_probe(kind)
        assert result.returncode == 0, f"{kind} failed: {result.stderr}"
        assert len(result.stdout.strip().splitlines()) > 1, result.stdout


def test_build_runs_steps_in_the_user_namespace(daemon: Daemon, tmp_path: Path) -> None:
    rootfs = host_rootfs(tmp_path / "rootfs")
    context = write_context(tmp_path / "context", DOCKERFILE, {"input.txt": "rootless\n"})
    out = tmp_path / "out.tar"
    build = daemon.client().build(
        context,
        f"type=oci,dest={out}",
        opts={"context:rootfs": "local:rootfs"},
        locals_={"rootfs": rootfs},
    )
    files = oci_image_files(out)
    uid_map = files["/out/uid_map"].decode()
    print(f"\ne2e: rootless build {build.seconds:.1f}s; a RUN step's uid_map:\n{uid_map}")
    # Root in the build step is uid 1000 outside: rootlesskit's namespace, no privilege.
    first = uid_map.split("\n", 1)[0].split()
    assert first[:3] == ["0", str(ROOTLESS_UID), "1"], uid_map
    assert files["/out/input.sha256"].endswith(b"  /input.txt\n")


def test_rootless_refuses_client_without_certificate(daemon: Daemon, tmp_path: Path) -> None:
    mine = daemon.rendered.client_certs(tmp_path / "client")
    errors = daemon.client(ClientCerts(ca=mine.ca, cert=None, key=None)).refusals(attempts=10)
    print(f"\ne2e: rootless, client without certificate: {Buildctl.telling(errors)}")
    assert all(
        "certificate required" in e or "broken pipe" in e or "reset by peer" in e for e in errors
    ), errors
    probe = tls_handshake(daemon.address, ClientCerts(ca=mine.ca, cert=None, key=None))
    assert "certificate required" in probe, probe
    assert tls_handshake(daemon.address, mine) == "ok"
