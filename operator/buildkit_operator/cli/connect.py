"""``buildkit-operator connect``: from a Builder to a working ``buildctl``/``docker buildx``.

Writes the Builder's client certificate to a private directory and prints the commands
that use it. With ``--port-forward`` it also forwards a local port to the builder (through
``kubectl port-forward``) for clients outside the cluster; the server certificate covers
``localhost`` and ``127.0.0.1`` for that.

With pools it prints one ``docker buildx create`` and one ``--append`` per further pool, each
node with its ``--platform``, so that a multi-platform build runs every platform natively.
With ``--key`` (a repository or project) it picks, per pool, the daemon that key always
lands on (``routing.py``) and prints that daemon's own address. Idle daemons (scaled to zero
by ``idleTimeout``) are woken first: through an annotation on the Builder, which a user who
may edit the Builder may set, and which the operator honours.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import GROUP, PLURAL, VERSION, pool_slug
from ..api.names import ANNOTATION_WAKE, ChildNames
from ..buildkit.routing import pick
from ..cluster import secret_data
from .client_cert import request_certificate, write_private

WAKE_TIMEOUT = 300.0


class ConnectError(Exception):
    """What stops a connect, for the command to print as one line under the name it was run
    by (``buildkit-operator`` or ``kubectl buildkit``), with exit status 2."""


def _fail(message: str) -> NoReturn:
    raise ConnectError(message)


# Where a pod's ServiceAccount credentials are mounted (a CI job running in the cluster).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def load_client_config(kubeconfig: str | None) -> str:
    """Load the credentials to talk to the API server as, and return the default namespace;
    ValueError says why nothing could be loaded.

    A kubeconfig (the flag, $KUBECONFIG, ~/.kube/config) as kubectl reads one; without any,
    inside a pod, the pod's ServiceAccount (a CI job in the cluster gets a certificate for
    its own identity, with no file to hand it)."""
    try:
        config.load_kube_config(config_file=kubeconfig)
    except Exception as err:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config()
            except Exception as inner:
                raise ValueError(
                    f"cannot load a kubeconfig ({err}) nor the pod's ServiceAccount ({inner})"
                ) from None
            try:
                return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
            except OSError:
                return "default"
        raise ValueError(f"cannot load a kubeconfig: {err}") from None
    _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    return str((active.get("context") or {}).get("namespace") or "default")


def connect(
    *,
    name: str,
    namespace: str | None,
    output_dir: Path | None,
    kubeconfig: str | None,
    port_forward: bool,
    local_port: int,
    key: str | None = None,
    wake_only: bool = False,
    shared: bool = False,
    duration: int | None = None,
) -> int:
    try:
        default_namespace = load_client_config(kubeconfig)
    except ValueError as err:
        _fail(str(err))
    namespace = namespace or default_namespace
    api = client.ApiClient()
    try:
        builder = cast(
            dict[str, Any],
            client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            ),
        )
    except ApiException as err:
        if err.status == 404:
            _fail(f"no Builder {name} in namespace {namespace}")
        _fail(f"cannot read Builder {namespace}/{name}: {err.status} {err.reason}")
    status = builder.get("status") or {}
    if wake_only or any(d.get("idle") for d in status.get("daemons") or []):
        woken = wake(api, name, namespace)
        if isinstance(woken, str):
            _fail(woken)
        builder = woken
        status = builder.get("status") or {}
    if wake_only:
        return 0
    spec = builder.get("spec") or {}
    mode = spec.get("tls", {}).get("mode", "auto")
    names = ChildNames(name)
    endpoint = status.get("endpoint") or names.endpoint(namespace)
    service_host = f"{names.service}.{namespace}.svc"

    flags: list[str] = []
    driver_opts: list[str] = []
    if mode == "auto":
        target = output_dir or Path.home() / ".config" / "buildkit-operator" / namespace / name
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        if shared:
            problem = _write_shared(api, name, namespace, status, target)
        else:
            problem = _write_own(api, name, namespace, status, target, duration)
        if problem:
            _fail(problem)
        flags = [
            "--tlscacert", str(target / "ca.pem"),
            "--tlscert", str(target / "cert.pem"),
            "--tlskey", str(target / "key.pem"),
        ]  # fmt: skip
        driver_opts = [
            f"cacert={target / 'ca.pem'}",
            f"cert={target / 'cert.pem'}",
            f"key={target / 'key.pem'}",
        ]
    elif mode == "secret":
        print(
            "# tls.mode is secret: use a client certificate signed by the CA in "
            f"{(builder.get('spec') or {}).get('tls', {}).get('secretName')}",
            file=sys.stderr,
        )

    if port_forward:
        targets: list[tuple[str | None, str, str]] = [
            (None, f"tcp://127.0.0.1:{local_port}", "localhost")
        ]
    else:
        targets = _targets(name, namespace, spec, status, key, endpoint, service_host)
    for index, (platform, address, servername) in enumerate(targets):
        opts = list(driver_opts)
        tls_flags = list(flags)
        if mode == "auto":
            tls_flags += ["--tlsservername", servername]
            opts.append(f"servername={servername}")
        if platform:
            print(f"# {platform}", file=sys.stderr)
        print(shlex.join(["buildctl", "--addr", address, *tls_flags, "debug", "workers"]))
        buildx = ["docker", "buildx", "create", "--name", name]
        if index:
            buildx += ["--append", "--node", f"{name}-{pool_slug(platform or '')}"]
        elif platform:
            buildx += ["--node", f"{name}-{pool_slug(platform)}"]
        buildx += ["--driver", "remote"]
        if opts:
            buildx += ["--driver-opt", ",".join(opts)]
        if platform:
            buildx += ["--platform", platform]
        print(shlex.join([*buildx, address]))
    if not port_forward:
        return 0

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _fail("--port-forward needs kubectl on PATH")
    command = [kubectl, "port-forward", "-n", namespace, f"service/{names.service}",
               f"{local_port}:1234"]  # fmt: skip
    if kubeconfig:
        command[1:1] = ["--kubeconfig", kubeconfig]
    print(f"# forwarding 127.0.0.1:{local_port} to {endpoint}; Ctrl-C stops", file=sys.stderr)
    # The lines above are for whoever reads them while the forward runs: a script reading a
    # pipe would otherwise get them only when kubectl exits (stdout is block-buffered then).
    sys.stdout.flush()
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def _write_own(
    api: client.ApiClient,
    name: str,
    namespace: str,
    status: dict[str, Any],
    target: Path,
    duration: int | None,
) -> str | None:
    """A certificate of the user's own (the default): the CA from the Builder's status, the
    key made here, the certificate signed through a CertificateSigningRequest."""
    ca_pem = status.get("caCertificate")
    if not ca_pem:
        return f"Builder {namespace}/{name} publishes no CA certificate yet (status.caCertificate)"
    signed = request_certificate(api, name, namespace, duration)
    if isinstance(signed, str):
        return signed
    write_private(target / "ca.pem", ca_pem.encode())
    write_private(target / "key.pem", signed.key_pem)
    write_private(target / "cert.pem", signed.cert_pem)
    print(
        f"# your client certificate for {namespace}/{name} written to {target}; it expires "
        f"{signed.not_after:%Y-%m-%dT%H:%M:%SZ} (request {signed.request})",
        file=sys.stderr,
    )
    return None


def _write_shared(
    api: client.ApiClient, name: str, namespace: str, status: dict[str, Any], target: Path
) -> str | None:
    """The Builder's shared client certificate (``--shared``): read from its Secret."""
    secret_name = status.get("clientSecretName") or ChildNames(name).client_secret
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
    except ApiException as err:
        return f"cannot read Secret {namespace}/{secret_name}: {err.status} {err.reason}"
    data = secret_data(api.sanitize_for_serialization(secret))
    missing = [k for k in ("ca.pem", "cert.pem", "key.pem") if not data.get(k)]
    if missing:
        return f"Secret {namespace}/{secret_name} lacks {', '.join(missing)}"
    for item in ("ca.pem", "cert.pem", "key.pem"):
        write_private(target / item, data[item])
    print(f"# shared client certificate of {namespace}/{name} written to {target}", file=sys.stderr)
    return None


def _targets(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    key: str | None,
    endpoint: str,
    service_host: str,
) -> list[tuple[str | None, str, str]]:
    """(platform, address, TLS server name) of each node the client should use: one per
    pool (its Service), or with a key the daemon of each pool that key lands on."""
    names = ChildNames(name)
    pools = [p.get("platform") for p in spec.get("pools") or [] if p.get("platform")]
    daemons = status.get("daemons") or []
    out: list[tuple[str | None, str, str]] = []
    for platform in pools or [None]:
        address, host = endpoint, service_host
        if platform:
            host = f"{names.pool_service(platform)}.{namespace}.svc"
            address = f"tcp://{host}:1234"
        if key is not None:
            ready = {
                d["name"]: d["address"]
                for d in daemons
                if d.get("ready") and d.get("platform") == platform
            }
            chosen = pick(key, ready)
            if chosen is not None:
                address = ready[chosen]
                host = address.removeprefix("tcp://").rsplit(":", 1)[0]
                print(f"# key {key!r} builds on daemon {chosen}", file=sys.stderr)
            else:
                print(f"# no daemon ready for key {key!r}: using {address}", file=sys.stderr)
        out.append((platform, address, host))
    return out


def wake(api: client.ApiClient, name: str, namespace: str) -> dict[str, Any] | str:
    """Ask the operator to start a Builder's idle daemons and wait until they serve.

    The request is an annotation on the Builder (what its users may already change), so
    waking needs no right beyond editing the Builder."""
    objects = client.CustomObjectsApi(api)
    started = time.monotonic()
    requested = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"metadata": {"annotations": {ANNOTATION_WAKE: requested}}}
    try:
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
    except ApiException as err:
        return f"cannot wake Builder {namespace}/{name}: {err.status} {err.reason}"
    print(f"# waking {namespace}/{name}", file=sys.stderr)
    while time.monotonic() - started < WAKE_TIMEOUT:
        builder = cast(
            dict[str, Any],
            objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        )
        status = builder.get("status") or {}
        daemons = status.get("daemons") or []
        if daemons and all(d.get("ready") for d in daemons):
            took = time.monotonic() - started
            print(f"# {namespace}/{name} awake after {took:.1f}s", file=sys.stderr)
            return builder
        time.sleep(0.5)
    return f"Builder {namespace}/{name} did not wake within {WAKE_TIMEOUT:.0f}s"
