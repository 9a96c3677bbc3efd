"""``buildkit-operator``: render, crd, run, connect.

Bad input is a one-line message naming the file, the Builder and the field, with exit status
2; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .. import __version__
from ..api import API_VERSION, KIND, Builder, InvalidBuilder
from ..api.crd import crd_yaml
from ..api.defaults import DEFAULTS, Defaults, InvalidDefaults, make_defaults
from ..pki import ensure_tls
from ..render import render_builder, server_sans
from .certificate_flags import add_connect_flags, add_signer_flags, lifetimes, request_seconds
from .output import dump_stream

EXIT_USAGE = 2
PROG = "buildkit-operator"
# kubectl runs an executable named kubectl-<name> on PATH as `kubectl <name>`: the same
# commands, named the way the user typed them in help and errors.
PLUGIN_PROG = "kubectl buildkit"


class UsageError(Exception):
    """Input a person must fix; printed as one line."""


def _fail(message: str, prog: str = PROG) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _documents(path: str) -> Iterator[tuple[str, Any]]:
    """(where, document) for every non-empty YAML document of a file, or stdin for '-'."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise UsageError(f"{path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{where}: not valid YAML: {problem}") from None
    for number, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
            if not isinstance(doc["items"] or [], list):
                raise UsageError(f"{path} (document {number}): items: must be a list")
            for item_number, item in enumerate(doc["items"] or [], start=1):
                yield f"{path} (document {number}, item {item_number})", item
        else:
            yield f"{path} (document {number})", doc


def load_builders(paths: Sequence[str], namespace: str) -> list[Builder]:
    """Every Builder in the files; other kinds are ignored, like ``helm template`` input."""
    builders = []
    for path in paths:
        for where, doc in _documents(path):
            if not isinstance(doc, dict):
                raise UsageError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
            if doc.get("kind") != KIND:
                continue
            meta = doc.get("metadata")
            name = (meta.get("name") if isinstance(meta, dict) else None) or "(no name)"
            if doc.get("apiVersion") != API_VERSION:
                raise UsageError(
                    f"{where}, Builder {name}: apiVersion: expected {API_VERSION}, "
                    f"got {doc.get('apiVersion')}"
                )
            try:
                builders.append(Builder.from_manifest(doc, namespace=namespace))
            except InvalidBuilder as err:
                raise UsageError(f"{where}, Builder {name}: {err}") from None
    return builders


def render_objects(
    builders: Sequence[Builder], now: datetime, defaults: Defaults = DEFAULTS
) -> list[dict[str, Any]]:
    """What the operator would create, with freshly issued TLS material where it runs a CA."""
    objects: list[dict[str, Any]] = []
    for builder in (defaults.apply(b) for b in builders):
        bundle = None
        if builder.spec.tls.mode == "auto":
            bundle = ensure_tls({}, name=builder.name, server_sans=server_sans(builder), now=now)
        objects += render_builder(builder, bundle)
    return objects


def cmd_render(args: argparse.Namespace) -> int:
    builders = load_builders(args.filename, args.namespace)
    if not builders:
        raise UsageError(f"no {API_VERSION} {KIND} in {', '.join(args.filename)}")
    dump_stream(render_objects(builders, datetime.now(UTC), defaults_from(args)), sys.stdout)
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime.process import run_operator  # imports kopf: only when running

    run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        verbose=args.verbose,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        request_timeout=args.request_timeout,
        concurrency=args.concurrency,
        defaults=defaults_from(args),
        election=election_from(args),
        lifetimes=lifetimes_from(args),
    )
    return 0


def lifetimes_from(args: argparse.Namespace) -> Any:
    """How long the client certificates the operator signs live (the CSR signer)."""
    try:
        return lifetimes(args.client_certificate_lifetime, args.client_certificate_max_lifetime)
    except ValueError as err:
        raise UsageError(str(err)) from None


def election_from(args: argparse.Namespace) -> Any:
    """The Lease to hold with ``--leader-elect``; None runs alone, as ``make up`` does."""
    if not args.leader_elect:
        return None
    from ..cluster.lease import Election, Timing, default_namespace

    timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    try:
        timing.check()
    except ValueError as err:
        raise UsageError(str(err)) from None
    return Election(
        namespace=args.leader_election_namespace or default_namespace(),
        name=args.leader_election_id,
        timing=timing,
    )


def cmd_connect(args: argparse.Namespace) -> int:
    from .connect import ConnectError, connect  # imports the kubernetes client: when connecting

    try:
        return connect(
            name=args.name,
            namespace=args.namespace,
            output_dir=Path(args.output_dir) if args.output_dir else None,
            kubeconfig=args.kubeconfig,
            port_forward=args.port_forward,
            local_port=args.local_port,
            key=getattr(args, "key", None),
            wake_only=args.func is cmd_wake,
            shared=bool(getattr(args, "shared", False)),
            duration=_duration(getattr(args, "duration", None)),
        )
    except ConnectError as err:
        raise UsageError(str(err)) from None


def _duration(text: str | None) -> int | None:
    try:
        return request_seconds(text)
    except ValueError as err:
        raise UsageError(str(err)) from None


def cmd_wake(args: argparse.Namespace) -> int:
    args.port_forward, args.local_port, args.output_dir = False, 0, None
    return cmd_connect(args)


def add_default_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "install-wide defaults", "applied where a Builder does not set the field itself"
    )
    group.add_argument(
        "--default-image-repository",
        default="",
        metavar="REPO",
        help="buildkitd image repository (tags: the pinned version, and <version>-rootless)",
    )
    group.add_argument(
        "--default-image-rootful",
        default="",
        metavar="IMAGE",
        help="buildkitd image of rootful Builders (wins over the repository)",
    )
    group.add_argument(
        "--default-image-rootless",
        default="",
        metavar="IMAGE",
        help="buildkitd image of rootless Builders (wins over the repository)",
    )
    group.add_argument(
        "--default-cache-size", default="", metavar="SIZE", help="cache.size, e.g. 50Gi"
    )
    group.add_argument(
        "--default-storage-class", default="", metavar="NAME", help="cache.storageClassName"
    )
    group.add_argument(
        "--default-resources",
        default="",
        metavar="JSON",
        help='resources of the buildkitd container, e.g. \'{"requests": {"cpu": "1"}}\'',
    )
    group.add_argument(
        "--default-registry-mirror",
        action="append",
        default=[],
        metavar="REGISTRY=HOST[,HOST]",
        help="buildkitd.registryMirrors entry; repeatable",
    )


def defaults_from(args: argparse.Namespace) -> Defaults:
    """The defaults the flags say; a bad one stops the command before it touches anything."""
    resources = None
    if args.default_resources:
        try:
            resources = json.loads(args.default_resources)
        except json.JSONDecodeError as err:
            raise UsageError(f"--default-resources: not JSON: {err}") from None
        if not isinstance(resources, dict):
            raise UsageError("--default-resources: must be a JSON object")
    try:
        return make_defaults(
            image_repository=args.default_image_repository,
            image_rootful=args.default_image_rootful,
            image_rootless=args.default_image_rootless,
            cache_size=args.default_cache_size,
            storage_class_name=args.default_storage_class,
            resources=resources,
            registry_mirrors=args.default_registry_mirror,
        )
    except InvalidDefaults as err:
        raise UsageError(str(err)) from None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run BuildKit builders in Kubernetes, reachable over mutual TLS.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser(
        "render", help="print every object the operator would create for some Builders"
    )
    render.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a YAML file with Builders ('-' for stdin); repeatable",
    )
    render.add_argument(
        "-n", "--namespace", default="default", help="namespace for Builders that name none"
    )
    add_default_flags(render)
    render.set_defaults(func=cmd_render)

    crd = sub.add_parser("crd", help="print the Builder CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig context")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace; repeatable"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every action in detail")
    run.add_argument(
        "--liveness",
        default="",
        help="serve a liveness endpoint at this URL, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port"
    )
    run.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds an API request may wait for an answer before it is given up and retried",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        default=16,
        metavar="N",
        help="reconciles run at once, and connections to the API server (default 16)",
    )
    election = run.add_argument_group(
        "leader election",
        "run several replicas: one reconciles, the others wait to take over (a Lease)",
    )
    election.add_argument(
        "--leader-elect", action="store_true", help="reconcile only while holding the Lease"
    )
    election.add_argument(
        "--leader-election-namespace",
        default="",
        metavar="NS",
        help="namespace of the Lease (default: the pod's own, else default)",
    )
    election.add_argument(
        "--leader-election-id", default="buildkit-operator", metavar="NAME", help="Lease name"
    )
    election.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="a leader not heard from this long is replaced (default 15)",
    )
    election.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a leader that could not renew this long exits (default 10)",
    )
    election.add_argument(
        "--retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the Lease is renewed, or tried by a standby (default 2)",
    )
    add_signer_flags(run)
    add_default_flags(run)
    run.set_defaults(func=cmd_run)

    connect = sub.add_parser(
        "connect", help="write a Builder's client certificate and print how to use it"
    )
    connect.add_argument("name", help="the Builder")
    connect.add_argument("-n", "--namespace", default=None, help="its namespace")
    connect.add_argument("-o", "--output-dir", help="where to write ca.pem, cert.pem, key.pem")
    connect.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube)")
    connect.add_argument(
        "--port-forward",
        action="store_true",
        help="forward a local port to the builder and keep running (clients outside the cluster)",
    )
    connect.add_argument("--local-port", type=int, default=1234, help="local port to forward")
    connect.add_argument(
        "--key",
        help="a repository or project: print the daemon (per pool) this key always builds "
        "on, so it keeps hitting its warm cache",
    )
    add_connect_flags(connect)
    connect.set_defaults(func=cmd_connect)

    wake = sub.add_parser(
        "wake", help="start a Builder's idle daemons (idleTimeout) and wait until they serve"
    )
    wake.add_argument("name", help="the Builder")
    wake.add_argument("-n", "--namespace", default=None, help="its namespace")
    wake.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube)")
    wake.set_defaults(func=cmd_wake)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except UsageError as err:
        _fail(str(err), prog)
    except BrokenPipeError:
        return 0
    return result


def kubectl_plugin(argv: Sequence[str] | None = None) -> int:
    """``kubectl buildkit …`` (the ``kubectl-buildkit`` executable): kubectl passes the words
    after ``buildkit`` unchanged, so the commands are the same as ``buildkit-operator``'s."""
    return main(argv, PLUGIN_PROG)


if __name__ == "__main__":
    raise SystemExit(main())
