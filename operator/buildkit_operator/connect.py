"""``buildkit-operator connect``: from a Builder to a working ``buildctl``/``docker buildx``.

Writes the Builder's client certificate to a private directory and prints the commands
that use it. With ``--port-forward`` it also forwards a local port to the builder (through
``kubectl port-forward``) for clients outside the cluster; the server certificate covers
``localhost`` and ``127.0.0.1`` for that.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .kube import secret_data
from .model import GROUP, PLURAL, VERSION
from .names import ChildNames


def _fail(message: str) -> int:
    print(f"buildkit-operator: error: {message}", file=sys.stderr)
    return 2


def connect(
    *,
    name: str,
    namespace: str | None,
    output_dir: Path | None,
    kubeconfig: str | None,
    port_forward: bool,
    local_port: int,
) -> int:
    try:
        config.load_kube_config(config_file=kubeconfig)
    except Exception as err:
        return _fail(f"cannot load a kubeconfig: {err}")
    if namespace is None:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = (active.get("context") or {}).get("namespace") or "default"
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
            return _fail(f"no Builder {name} in namespace {namespace}")
        return _fail(f"cannot read Builder {namespace}/{name}: {err.status} {err.reason}")
    status = builder.get("status") or {}
    mode = (builder.get("spec") or {}).get("tls", {}).get("mode", "auto")
    names = ChildNames(name)
    endpoint = status.get("endpoint") or names.endpoint(namespace)
    service_host = f"{names.service}.{namespace}.svc"

    flags: list[str] = []
    driver_opts: list[str] = []
    if mode == "auto":
        secret_name = status.get("clientSecretName") or names.client_secret
        try:
            secret = client.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
        except ApiException as err:
            return _fail(f"cannot read Secret {namespace}/{secret_name}: {err.status} {err.reason}")
        data = secret_data(api.sanitize_for_serialization(secret))
        missing = [k for k in ("ca.pem", "cert.pem", "key.pem") if not data.get(k)]
        if missing:
            return _fail(f"Secret {namespace}/{secret_name} lacks {', '.join(missing)}")
        target = output_dir or Path.home() / ".config" / "buildkit-operator" / namespace / name
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for key in ("ca.pem", "cert.pem", "key.pem"):
            path = target / key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data[key])
        print(f"# client certificate of {namespace}/{name} written to {target}", file=sys.stderr)
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

    address = f"tcp://127.0.0.1:{local_port}" if port_forward else endpoint
    servername = "localhost" if port_forward else service_host
    if mode == "auto":
        flags += ["--tlsservername", servername]
        driver_opts.append(f"servername={servername}")
    buildctl = ["buildctl", "--addr", address, *flags, "debug", "workers"]
    print(shlex.join(buildctl))
    buildx = ["docker", "buildx", "create", "--name", name, "--driver", "remote"]
    if driver_opts:
        buildx += ["--driver-opt", ",".join(driver_opts)]
    print(shlex.join([*buildx, address]))
    if not port_forward:
        return 0

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return _fail("--port-forward needs kubectl on PATH")
    command = [kubectl, "port-forward", "-n", namespace, f"service/{names.service}",
               f"{local_port}:1234"]  # fmt: skip
    if kubeconfig:
        command[1:1] = ["--kubeconfig", kubeconfig]
    print(f"# forwarding 127.0.0.1:{local_port} to {endpoint}; Ctrl-C stops", file=sys.stderr)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
