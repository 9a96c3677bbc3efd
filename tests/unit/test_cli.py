"""The ``buildkit-operator`` command: ``render`` prints what the operator would create, bad
input is one line naming the problem with exit status 2 (never a traceback), and ``crd``
prints the CRD that is in crds/. Most cases call the command in this interpreter
(cli_in_process); the installed entry point is run as a user runs it, as a subprocess, for
``crd`` and for one bad input."""

from __future__ import annotations

import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildkit_operator.cli.main import load_builders, render_objects
from buildkit_operator.cli.output import dump_stream, needs_quotes
from cli_in_process import OPERATOR, run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "builder.yaml"

BUILDER = """\
apiVersion: buildkit.dev/v1alpha1
kind: Builder
metadata:
  name: {name}
spec:
{spec}
"""


run = run_cli


def run_installed(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a process of its own, as a user runs it."""
    return subprocess.run(
        [str(OPERATOR), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr:\n{proc.stderr}"
    assert proc.stdout == "", "nothing is printed for bad input"
    (line,) = lines
    assert line.startswith("buildkit-operator: error: "), line
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


def kinds_and_names(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in docs]


# --- render -------------------------------------------------------------------------------


def test_render_example_prints_every_child() -> None:
    proc = run("render", "-f", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    docs = list(yaml.safe_load_all(proc.stdout))
    assert proc.stdout.startswith("---\n")
    assert kinds_and_names(docs) == [
        ("ConfigMap", "team-a-config"),
        ("Secret", "team-a-ca"),
        ("Secret", "team-a-server-tls"),
        ("Secret", "team-a-client-tls"),
        ("PersistentVolumeClaim", "team-a-cache-0"),
        ("PersistentVolumeClaim", "team-a-cache-1"),
        ("Deployment", "team-a-0"),
        ("Deployment", "team-a-1"),
        ("Service", "team-a"),
        # headless: every daemon's own name (team-a-0.team-a-f3ec5513.ci.svc); users'
        # configuration may hold it, so it must never change
        ("Service", "team-a-f3ec5513"),
        ("PodDisruptionBudget", "team-a"),
    ]
    # The same objects the library renders (certificates aside, which are new each time).
    builders = load_builders([str(EXAMPLE)], "default")
    expected = render_objects(builders, datetime.now(UTC))
    assert kinds_and_names(docs) == kinds_and_names(expected)
    for got, want in zip(docs, expected, strict=True):
        if got["kind"] == "Deployment":
            # Certificates are new on every run, and so is their checksum.
            got, want = got["spec"]["template"]["spec"], want["spec"]["template"]["spec"]
        if got.get("kind") != "Secret":
            assert got == want
    for doc in docs:
        assert doc["metadata"]["namespace"] == "ci"
        assert doc["apiVersion"] in ("v1", "apps/v1", "policy/v1")
    # buildkitd.toml is printed readable, as a block.
    assert "buildkitd.toml: |" in proc.stdout
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert "mirror.internal:5000" in config["data"]["buildkitd.toml"]


def test_render_reads_stdin_and_several_documents() -> None:
    stream = "\n---\n".join(
        [
            BUILDER.format(name="one", spec="  tls: {mode: disabled}"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n",
            BUILDER.format(name="two", spec="  replicas: 0"),
            "",
        ]
    )
    proc = run("render", "-f", "-", "-n", "builds", stdin=stream)
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    names = kinds_and_names(docs)
    assert ("Deployment", "one-0") in names and ("Service", "two") in names
    assert ("ConfigMap", "unrelated") not in names
    # "one" has TLS disabled; "two" has the default, auto, with no daemons.
    assert [n for n in names if n[0] == "Secret"] == [
        ("Secret", "two-ca"),
        ("Secret", "two-server-tls"),
        ("Secret", "two-client-tls"),
    ]
    # -n applies to Builders that name no namespace.
    assert {d["metadata"]["namespace"] for d in docs} == {"builds"}


BAD_BUILDERS = [
    ("cache-size", "  cache: {size: 50Gib}", ["spec.cache.size", "50Gib"]),
    ("unknown-field", "  replica: 2", ["spec.replica", "unknown field"]),
    ("tls-secret", "  tls: {mode: secret}", ["spec.tls.secretName", "required"]),
    (
        "toml",
        "  buildkitd:\n    config: |\n      [worker.oci\n      gc = true\n",
        ["spec.buildkitd.config", "not valid TOML", "line 1"],
    ),
    ("spec-scalar", "  42", ["spec", "valid dictionary"]),
]

BAD_DOCUMENTS = [
    (
        "metadata-scalar",
        "apiVersion: buildkit.dev/v1alpha1\nkind: Builder\nmetadata: just-a-name\n",
        ["metadata", "mapping"],
    ),
    (
        "api-version",
        "apiVersion: buildkit.dev/v1\nkind: Builder\nmetadata: {name: x}\n",
        ["apiVersion", "buildkit.dev/v1alpha1"],
    ),
    ("list-document", "- a\n- list\n", ["expected a Kubernetes object"]),
    ("list-items", "apiVersion: v1\nkind: List\nitems: 3\n", ["items"]),
    (
        "no-builder",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        ["no buildkit.dev/v1alpha1"],
    ),
]

BROKEN_YAML = (
    "apiVersion: buildkit.dev/v1alpha1\n"
    "kind: Builder\n"
    "metadata:\n"
    "  name: team-a\n"
    "spec:\n"
    "  replicas: [1, 2\n"
    "  rootless: true\n"
)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """(input file, finished command) per bad input."""
    root = tmp_path_factory.mktemp("bad")
    files: dict[str, Path] = {}
    for name, spec, _ in BAD_BUILDERS:
        files[name] = root / f"{name}.yaml"
        files[name].write_text(BUILDER.format(name="bad", spec=spec))
    for name, text, _ in BAD_DOCUMENTS:
        files[name] = root / f"{name}.yaml"
        files[name].write_text(text)
    files["broken-yaml"] = root / "broken.yaml"
    files["broken-yaml"].write_text(BROKEN_YAML)
    files["binary"] = root / "image.yaml"
    files["binary"].write_bytes(b"\xff\xfe\x00\x01binary")
    files["missing"] = root / "nope.yaml"
    return {name: (path, run("render", "-f", str(path))) for name, path in files.items()}


@pytest.mark.parametrize(
    ("case", "phrases"),
    [pytest.param(name, phrases, id=name) for name, _, phrases in BAD_BUILDERS],
)
def test_render_bad_builder_is_one_line_naming_the_field(
    bad: dict[str, tuple[Path, Any]], case: str, phrases: list[str]
) -> None:
    path, proc = bad[case]
    line = assert_one_line_error(proc, *phrases)
    # Which file and which Builder, too.
    assert str(path) in line and "Builder bad" in line


@pytest.mark.parametrize(
    ("case", "phrases"),
    [pytest.param(name, phrases, id=name) for name, _, phrases in BAD_DOCUMENTS],
)
def test_render_bad_documents(
    bad: dict[str, tuple[Path, Any]], case: str, phrases: list[str]
) -> None:
    path, proc = bad[case]
    line = assert_one_line_error(proc, *phrases)
    assert str(path) in line


def test_render_invalid_yaml_names_the_line(bad: dict[str, tuple[Path, Any]]) -> None:
    path, proc = bad["broken-yaml"]
    line = assert_one_line_error(proc, "not valid YAML")
    # The unclosed list of line 6 is noticed at line 7.
    assert f"{path}:7:" in line, line


def test_render_binary_file(bad: dict[str, tuple[Path, Any]]) -> None:
    path, proc = bad["binary"]
    assert_one_line_error(proc, str(path), "UTF-8")


def test_render_missing_file(bad: dict[str, tuple[Path, Any]]) -> None:
    path, proc = bad["missing"]
    assert_one_line_error(proc, str(path), "No such file")


def test_installed_command_reports_bad_input_in_one_line(
    bad: dict[str, tuple[Path, Any]],
) -> None:
    """The entry point in a process of its own: exit status 2 and one line, no traceback, the
    same as the in-process call gives."""
    path, _ = bad["cache-size"]
    proc = run_installed("render", "-f", str(path))
    assert_one_line_error(proc, "spec.cache.size", "50Gib", str(path), "Builder bad")
    assert proc.stderr == bad["cache-size"][1].stderr, "the same as main() in-process"


def test_render_needs_a_file() -> None:
    proc = run("render")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "-f" in proc.stderr


# --- crd ----------------------------------------------------------------------------------


def test_crd_prints_the_committed_crd() -> None:
    proc = run_installed("crd")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (REPO / "crds" / "builders.buildkit.dev.yaml").read_text(), (
        "crds/ differs from `buildkit-operator crd`: regenerate with "
        "`.venv/bin/buildkit-operator crd > crds/builders.buildkit.dev.yaml`"
    )
    crd = yaml.safe_load(proc.stdout)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "builders.buildkit.dev"


@pytest.mark.parametrize(
    "value",
    ["2214636903781e04", "1e3", "0x1f", "1_000", "12:30", "2026-01-01", "0", "-1", ".5",
     "yes", "On", "NULL", "~", "y", ".inf", " padded", "trailing "],
)  # fmt: skip
def test_render_quotes_strings_yaml_readers_take_for_something_else(value: str) -> None:
    """A config hash of digits and one `e` is a float to kubectl's YAML reader (Go's):
    `buildkit-operator render | kubectl apply -f -` failed on one Builder in a thousand."""

    assert needs_quotes(value)
    out = io.StringIO()
    dump_stream([{"metadata": {"annotations": {"buildkit.dev/config-hash": value}}}], out)
    assert f'"{value}"' in out.getvalue()
    assert yaml.safe_load(out.getvalue())["metadata"]["annotations"] == {
        "buildkit.dev/config-hash": value
    }


@pytest.mark.parametrize("value", ["d18372847aa1a3bf", "buildkitd", "tcp://0.0.0.0:1234", "a1"])
def test_render_leaves_plain_strings_plain(value: str) -> None:

    assert not needs_quotes(value)
