"""The package's import rules (CONTRIBUTING.md, "Layers"): a layer imports only the layers
below it, and a pure module imports nothing that does I/O.

Read from the source with ``ast`` (every import counts, including those under
``TYPE_CHECKING`` and inside functions), so a rule is broken the moment a line is written,
not when some test happens to import the module.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "buildkit_operator"
ROOT = "buildkit_operator"

# What each layer may import of the operator (the architecture's table).
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "pki": set(),
    "render": {"pki", "api"},
    "buildkit": {"pki", "api"},
    "cluster": {"api"},
    "reconcile": {"render", "buildkit", "cluster", "pki", "api"},
    "runtime": {"reconcile", "cluster", "api"},
    "cli": {"runtime", "reconcile", "buildkit", "cluster", "render", "pki", "api"},
}
# Pure by layer, by name, and wherever a module's docstring says "Pure".
PURE_LAYERS = {"api", "pki", "render"}
PURE_MODULES = {
    "buildkit.routing",
    "reconcile.plan",
    "reconcile.holds",
    "reconcile.drift",
    "reconcile.status",
    "reconcile.daemon_state",
    "reconcile.idle",
    "reconcile.autoscale",
    "reconcile.types",
    "reconcile.requeue",
}
# What a pure module must not import: the layers that talk to the world, and the
# libraries that do I/O. ``kubernetes.utils.quantity`` is a parser, not a client.
IMPURE_LAYERS = {"cluster", "buildkit", "runtime", "cli"}
IO_LIBRARIES = (
    "kopf",
    "grpc",
    "urllib3",
    "requests",
    "aiohttp",
    "socket",
    "subprocess",
    "http",
    "asyncio",
    "threading",
    "concurrent",
    "prometheus_client",
    "kubernetes.client",
    "kubernetes.config",
    "kubernetes.dynamic",
    "kubernetes.watch",
    "kubernetes.stream",
)
KUBERNETES_PURE = ("kubernetes.utils.quantity",)


def module_name(path: Path) -> str:
    """``reconcile/plan.py`` → ``reconcile.plan``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module ``source`` imports, absolute; the operator's own without the
    ``buildkit_operator.`` prefix (and ``""`` for the package's top)."""
    here = module.split(".") if module else []
    if not is_package:
        here = here[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _ours(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
                if node.module is None:  # from . import x: x is a module, or a name in base
                    for alias in node.names:
                        sub = ".".join([*base, alias.name])
                        exists = (PACKAGE / sub.replace(".", "/")).with_suffix(".py").exists()
                        yield (
                            sub if exists or (PACKAGE / sub.replace(".", "/")).is_dir() else target
                        )
                else:
                    yield target
            elif node.module:
                yield _ours(node.module)


def _ours(name: str) -> str:
    if name == ROOT:
        return ""
    return name.removeprefix(ROOT + ".") if name.startswith(ROOT + ".") else "!" + name


def is_pure(module: str, source: str) -> bool:
    layer = module.split(".")[0]
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return (
        layer in PURE_LAYERS
        or module in PURE_MODULES
        or re.search(r"\bPure\b", docstring) is not None
    )


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The rules ``module`` (its source given) breaks, one line each."""
    layer = module.split(".")[0] if module else ""
    pure = is_pure(module, source)
    found: list[str] = []
    for target in imports(source, module, is_package):
        if target.startswith("!"):
            external = target[1:]
            if (
                pure
                and not external.startswith(KUBERNETES_PURE)
                and any(external == lib or external.startswith(lib + ".") for lib in IO_LIBRARIES)
            ):
                found.append(f"{module} is pure but imports {external}")
            continue
        other = target.split(".")[0]
        if other == layer or not layer or not other:  # the package's top holds __version__
            continue
        if other not in ALLOWED.get(layer, set()):
            found.append(f"{module} ({layer}) imports {target} ({other or 'the package top'})")
        if pure and other in IMPURE_LAYERS:
            found.append(f"{module} is pure but imports {target}")
    return found


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    strays = [
        module_name(p)
        for p in package_modules()
        if module_name(p) and module_name(p).split(".")[0] not in ALLOWED
    ]
    assert not strays, f"modules outside the layer folders: {strays}"


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: module_name(p) or "__init__")
def test_imports_follow_the_layers(path: Path) -> None:
    assert not violations(module_name(path), path.read_text(), path.name == "__init__.py")


def test_the_pure_modules_are_found() -> None:
    """The pure set is what the architecture names, not an empty list that passes."""
    pure = {module_name(p) for p in package_modules() if is_pure(module_name(p), p.read_text())}
    assert pure >= PURE_MODULES
    assert {"api.defaults", "render", "reconcile.plan"} <= pure
    assert not pure & {"reconcile.loop", "reconcile.observe", "cluster.client", "runtime.runner"}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # A lower layer importing a higher one, relative and absolute.
        ("render.workload", "from ..reconcile.idle import x\n", "imports reconcile.idle"),
        ("api.names", "from buildkit_operator.cli import main\n", "imports cli"),
        ("cluster.client", "from ..render import render_builder\n", "imports render"),
        ("buildkit.activity", "from ..cluster import Kube\n", "imports cluster"),
        # Type-only and function-local imports count too.
        (
            "reconcile.holds",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..runtime import x\n",
            "imports runtime",
        ),
        ("pki.bundle", "def f():\n    from ..api import Builder\n", "imports api"),
        # A pure module importing I/O, directly or through an impure layer.
        ("reconcile.plan", "import urllib3\n", "is pure but imports urllib3"),
        ("reconcile.plan", "from kubernetes.client import ApiException\n", "is pure but imports"),
        ("reconcile.status", "from ..cluster import Kube\n", "is pure but imports cluster"),
        ("reconcile.types", "from ..buildkit.activity import ask\n", "is pure but imports"),
        ("reconcile.observe", '"""Pure."""\nimport grpc\n', "is pure but imports grpc"),
        ("api.crd", "import kopf\n", "is pure but imports kopf"),
    ],
)
def test_the_check_catches_a_broken_rule(module: str, source: str, expected: str) -> None:
    found = violations(module, source)
    assert any(expected in line for line in found), found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("reconcile.loop", "from ..cluster import Kube\nfrom ..buildkit.activity import ask\n"),
        ("reconcile.plan", "from kubernetes.utils.quantity import parse_quantity\n"),
        ("cli.main", "from ..runtime.process import run_operator\n"),
        ("render.workload", "from ..api.names import PORT\nfrom . import meta\n"),
    ],
)
def test_the_check_lets_allowed_imports_through(module: str, source: str) -> None:
    assert violations(module, source) == []
