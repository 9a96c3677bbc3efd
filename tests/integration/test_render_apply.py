"""What ``buildkit-operator render`` prints is accepted by the real API server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / ".venv" / "bin" / "buildkit-operator"
LONG_DOTTED = ("team." * 50 + "builder")[:253].rstrip(".")

VARIANTS: dict[str, dict[str, Any]] = {
    "contract example": {},  # examples/builder.yaml as it is
    "rootful, ephemeral, NodePort": {
        "rootless": False,
        "cache": {"type": "ephemeral", "size": "2Gi"},
        "service": {"type": "NodePort"},
    },
    "tls secret": {"tls": {"mode": "secret", "secretName": "my-tls"}},
    "tls disabled, every pod field": {
        "tls": {"mode": "disabled"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ci",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "priorityClassName": "builders",
        "serviceAccountName": "builder",
        "imagePullSecrets": [{"name": "pull"}],
        "podLabels": {"team": "a"},
        "podAnnotations": {"example.com/note": "x"},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
        "buildkitd": {"args": ["--debug"], "platforms": ["linux/amd64", "linux/arm64"],
                      "insecureRegistries": ["registry.local:5000"],
                      "config": "[history]\nmaxEntries = 10\n"},
    },
}  # fmt: skip


def _render(variant: dict[str, Any], namespace: str, name: str = "team-a") -> str:
    doc = yaml.safe_load((REPO / "examples" / "builder.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"].update(variant)
    proc = subprocess.run(
        [str(OPERATOR), "render", "-f", "-"],
        input=yaml.safe_dump(doc),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("dry_run", ["client", "server"])
def test_rendered_objects_are_accepted(
    kubectl: Any, namespace: str, variant: str, dry_run: str
) -> None:
    stream = _render(VARIANTS[variant], namespace)
    result = kubectl.run(
        "apply", f"--dry-run={dry_run}", "--validate=strict", "-f", "-", input=stream
    )
    assert result.returncode == 0, result.stderr
    kinds = {line.split("/", 1)[0] for line in result.stdout.splitlines() if "/" in line}
    assert {"configmap", "deployment.apps", "service"} <= kinds, result.stdout
    # kubectl reports an unknown field on stderr (stdout only lists the objects).
    assert "unknown field" not in result.stderr, result.stderr


def test_longest_dotted_name_renders_valid_objects(kubectl: Any, namespace: str) -> None:
    assert len(LONG_DOTTED) == 253
    stream = _render({}, namespace, name=LONG_DOTTED)
    out = kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=stream)
    assert out.count("(server dry run)") == len(list(yaml.safe_load_all(stream)))
