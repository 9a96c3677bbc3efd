"""The rendered rootful buildkitd serves builds over mutual TLS, and only over it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from buildkit_e2e import (
    Buildctl,
    ClientCerts,
    Daemon,
    DaemonPool,
    RenderBuilders,
    Rendered,
    oci_image_files,
    tls_handshake,
    write_context,
)

pytestmark = pytest.mark.e2e

FILES: dict[str, bytes] = {
    "hello.txt": b"hello from the build context\n",
    "docs/readme.md": b"# nested\n\nwith two lines\n",
    "data/bytes.bin": bytes(range(256)) * 4,
}
# How buildctl (Go) reports a refusal in the TLS 1.3 handshake: the server's alert, or, when the
# client wrote its first request before the alert arrived, only the closed connection.
CLOSED = ("write: broken pipe", "connection reset by peer")
DOCKERFILE = """\
FROM scratch
COPY hello.txt /hello.txt
COPY docs/ /usr/share/docs/
COPY data/bytes.bin /data/bytes.bin
"""


@pytest.fixture(scope="module")
def builders(render_builders: RenderBuilders) -> dict[str, Rendered]:
    # Two Builders: each gets its own CA, so one's client certificate means nothing to the other.
    return render_builders(
        {
            "mtls": {"rootless": False, "cache": {"type": "ephemeral", "size": "5Gi"}},
            "other": {"rootless": False},
            "pair": {"rootless": False, "replicas": 2, "cache": {"size": "5Gi"}},
        }
    )


@pytest.fixture(scope="module")
def daemon(builders: dict[str, Rendered], daemons: DaemonPool) -> Daemon:
    return daemons.start(builders["mtls"])


def test_rendered_container_runs_as_described(daemon: Daemon) -> None:
    """The harness ran the rendered args unchanged, apart from host paths and the port."""
    rendered_args = daemon.container["args"]
    assert "command" not in daemon.container
    assert len(daemon.args) == len(rendered_args) + 1  # the entrypoint, buildkitd
    for rendered, used in zip(rendered_args, daemon.args[1:], strict=True):
        if rendered == "tcp://0.0.0.0:1234":
            assert used == daemon.address
        elif rendered.startswith(("/", "unix:///")):
            # An in-container path: moved under the daemon's directory, same file name.
            path = used.removeprefix("unix://")
            assert path.startswith(f"{daemon.layout.base}/"), (rendered, used)
        else:
            assert used == rendered
    flags = {flag: value for flag, value in itertools.pairwise(daemon.args) if flag[:2] == "--"}
    for flag in ("--config", "--tlscacert", "--tlscert", "--tlskey"):
        assert Path(flags[flag]).is_file(), f"{flag} {flags[flag]} was not materialised"


def test_probes_reach_the_daemon(daemon: Daemon) -> None:
    """The readiness and liveness probes, run as the kubelet would, inside the container."""
    for kind in ("readinessProbe", "livenessProbe"):
        result = daemon.run_probe(kind)
        assert result.returncode == 0, f"{kind} failed: {result.stderr}"
        assert len(result.stdout.strip().splitlines()) > 1, result.stdout


def test_build_with_client_certificate(daemon: Daemon, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", DOCKERFILE, FILES)
    out = tmp_path / "out.tar"
    build = daemon.client().build(context, f"type=oci,dest={out}")
    print(f"\ne2e: scratch build over mTLS took {build.seconds:.1f}s")

    files = oci_image_files(out)
    assert files["/hello.txt"] == FILES["hello.txt"]
    assert files["/usr/share/docs/readme.md"] == FILES["docs/readme.md"]
    assert files["/data/bytes.bin"] == FILES["data/bytes.bin"]
    assert set(files) == {"/hello.txt", "/usr/share/docs/readme.md", "/data/bytes.bin"}


def test_server_certificate_names(daemon: Daemon, tmp_path: Path) -> None:
    """Port-forwarded clients reach the daemon as localhost or 127.0.0.1, and in the cluster
    by the Service name: all are SANs of the server certificate. A name it lacks is refused."""
    certs = daemon.rendered.client_certs(tmp_path / "client")
    for name in ("localhost", "mtls.e2e.svc", "mtls.e2e.svc.cluster.local"):
        daemon.client(certs, server_name=name).run("debug", "workers")
    # No --tlsservername: verified against the address, 127.0.0.1 (an IP SAN).
    daemon.client(certs, server_name="").run("debug", "workers")

    refused = daemon.client(certs, server_name="not-a-san.example").run(
        "debug", "workers", check=False
    )
    assert refused.returncode != 0
    assert "certificate is valid for" in refused.stderr, refused.stderr


def test_refuses_plaintext_client(daemon: Daemon) -> None:
    result = daemon.plaintext_client().run("debug", "workers", check=False)
    print(f"\ne2e: plaintext client: {result.stderr.strip()}")
    assert result.returncode != 0
    # The TLS listener closes a connection that does not start a handshake: gRPC reports a
    # failed HTTP/2 preface (buildkitd logs nothing about it).
    assert "server preface" in result.stderr or any(c in result.stderr for c in CLOSED), (
        result.stderr
    )


def test_refuses_client_without_certificate(daemon: Daemon, tmp_path: Path) -> None:
    """TLS that trusts the server, but presents no client certificate."""
    client_files = daemon.rendered.client_certs(tmp_path / "client")
    certs = ClientCerts(ca=client_files.ca, cert=None, key=None)
    errors = daemon.client(certs).refusals(attempts=10)
    print(f"\ne2e: client without certificate: {Buildctl.telling(errors)}")
    for error in errors:
        assert "tls: certificate required" in error or any(c in error for c in CLOSED), error
    # Reading before writing always gets the server's alert.
    probe = tls_handshake(daemon.address, certs)
    print(f"e2e: client without certificate (probe): {probe}")
    assert "certificate required" in probe, probe


def test_refuses_certificate_of_another_builder(
    daemon: Daemon, builders: dict[str, Rendered], tmp_path: Path
) -> None:
    """The other Builder's client certificate, trusting this server's CA so the client side of
    the handshake succeeds: the server refuses it. (Go's client does not even offer a
    certificate the server's CertificateRequest names no issuer of, so the server sees none.)"""
    other_certs = builders["other"].client_certs(tmp_path / "other")
    mine = daemon.rendered.client_certs(tmp_path / "mine")
    certs = ClientCerts(ca=mine.ca, cert=other_certs.cert, key=other_certs.key)
    errors = daemon.client(certs).refusals(attempts=10)
    print(f"\ne2e: other Builder's certificate: {Buildctl.telling(errors)}")
    for error in errors:
        assert "tls: certificate required" in error or any(c in error for c in CLOSED), error

    # Presented regardless (OpenSSL's client does), the server's chain check refuses it.
    offered = tls_handshake(daemon.address, certs)
    print(f"e2e: other Builder's certificate, presented: {offered}")
    assert "unknown ca" in offered.lower() or "bad certificate" in offered.lower(), offered
    assert tls_handshake(daemon.address, mine) == "ok"

    # Trusting only the other Builder's CA, the client refuses this server.
    errors = daemon.client(other_certs).refusals()
    print(f"e2e: other Builder's CA: {Buildctl.telling(errors)}")
    assert "certificate signed by unknown authority" in errors[-1], errors


def test_every_daemon_of_a_builder_serves_the_same_clients(
    builders: dict[str, Rendered], daemons: DaemonPool, tmp_path: Path
) -> None:
    """Two replicas: two Deployments, each its own cache volume, one server certificate; one
    client certificate works against either (the Service balances between them)."""
    pair = builders["pair"]
    assert len(pair.deployments) == 2
    claims = [
        next(
            v["persistentVolumeClaim"]["claimName"]
            for v in d["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        )
        for d in pair.deployments
    ]
    assert len(set(claims)) == 2, claims
    certs = pair.client_certs(tmp_path / "client")
    for index in (0, 1):
        daemon = daemons.start(pair, daemon=index)
        workers = daemon.client(certs).run("debug", "workers").stdout
        assert len(workers.strip().splitlines()) == 2, workers
