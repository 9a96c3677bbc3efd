"""The Argo CD health check shipped with the chart (health/builder.lua), run by a real Lua
interpreter the way Argo CD runs it: the live object in the global ``obj``, the script's
return value a table with ``status`` and ``message``.

Argo CD's interpreter speaks Lua 5.1, so the script runs under Lua 5.1 here, and under 5.4
to show it relies on nothing that changed since.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51
import lupa.lua54
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / "charts" / "buildkit-operator" / "health"
SCRIPT = (HEALTH / "builder.lua").read_text()
ARGOCD_KEY = "resource.customizations.health.buildkit.dev_Builder"
RUNTIMES = {"lua5.1": lupa.lua51, "lua5.4": lupa.lua54}


def health(obj: dict[str, Any], runtime: str = "lua5.1") -> dict[str, Any]:
    lua = RUNTIMES[runtime].LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(copy.deepcopy(obj), recursive=True)
    hs = lua.execute(SCRIPT)
    result = dict(hs.items())
    assert set(result) == {"status", "message"}, result
    return result


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def builder(generation: int = 3, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": "team-a", "namespace": "ci", "generation": generation},
        "spec": {"replicas": 2},
    }
    if status is not None:
        obj["status"] = status
    return obj


READY = cond("Ready", "True", "Ready", "2/2 daemons ready")
NOT_READY = cond("Ready", "False", "Pending", "1/2 daemons ready")
ROLLING = cond("Progressing", "True", "RollingOut", "rolling out generation 3: 1/2 updated")
SETTLED = cond("Progressing", "False", "Settled", "")

# (id, object, Argo CD status, a phrase the message must contain)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-status", builder(), "Progressing", "Waiting for the operator"),
    ("empty-status", builder(status={}), "Progressing", "Waiting for the operator"),
    (
        "older-generation",
        builder(3, {"observedGeneration": 2, "phase": "Ready", "conditions": [READY]}),
        "Progressing",
        "generation 3",
    ),
    (
        "older-generation-even-if-invalid",
        builder(3, {"observedGeneration": 2, "phase": "Invalid", "message": "old news"}),
        "Progressing",
        "Waiting for the operator",
    ),
    (
        "rolling-out",
        builder(
            3, {"observedGeneration": 3, "phase": "Pending", "conditions": [NOT_READY, ROLLING]}
        ),
        "Progressing",
        "rolling out generation 3",
    ),
    (
        "progressing-wins-over-ready",
        builder(3, {"observedGeneration": 3, "phase": "Ready", "conditions": [READY, ROLLING]}),
        "Progressing",
        "1/2 updated",
    ),
    (
        "progressing-without-message",
        builder(
            3, {"observedGeneration": 3, "conditions": [cond("Progressing", "True", "Recreating")]}
        ),
        "Progressing",
        "Recreating",
    ),
    (
        "ready",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Ready",
                "message": "2/2 daemons ready",
                "conditions": [READY, SETTLED],
            },
        ),
        "Healthy",
        "2/2 daemons ready",
    ),
    (
        "ready-newer-observed",
        builder(3, {"observedGeneration": 4, "phase": "Ready", "conditions": [READY]}),
        "Healthy",
        "2/2",
    ),
    (
        "invalid",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Invalid",
                "message": "spec.buildkitd.config: not valid TOML",
                "conditions": [
                    cond("Ready", "False", "InvalidSpec", "spec.buildkitd.config: not valid TOML")
                ],
            },
        ),
        "Degraded",
        "not valid TOML",
    ),
    (
        "degraded",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Degraded",
                "message": "0/2 daemons ready: ImagePullBackOff",
                "conditions": [
                    NOT_READY,
                    SETTLED,
                    cond("Degraded", "True", "PodsFailing", "ImagePullBackOff"),
                ],
            },
        ),
        "Degraded",
        "ImagePullBackOff",
    ),
    (
        "degraded-message-only-in-condition",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Degraded",
                "conditions": [cond("Degraded", "True", "PodsFailing", "CrashLoopBackOff")],
            },
        ),
        "Degraded",
        "CrashLoopBackOff",
    ),
    (
        "drifted",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Drifted",
                "message": "noRecreate: Deployment team-a-0 differs in spec.replicas",
                "conditions": [NOT_READY, cond("Drifted", "True", "Drift", "spec.replicas")],
            },
        ),
        "Degraded",
        "differs in spec.replicas",
    ),
    (
        "missing",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Missing",
                "message": "noCreate: Deployment team-a-0 does not exist",
                "conditions": [cond("Ready", "False", "Missing", "")],
            },
        ),
        "Degraded",
        "does not exist",
    ),
    (
        "missing-without-any-message",
        builder(3, {"observedGeneration": 3, "phase": "Missing"}),
        "Degraded",
        "Missing",
    ),
    (
        "pending",
        builder(
            3,
            {
                "observedGeneration": 3,
                "phase": "Pending",
                "message": "creating children",
                "conditions": [NOT_READY],
            },
        ),
        "Progressing",
        "creating children",
    ),
    (
        "pending-no-conditions",
        builder(3, {"observedGeneration": 3, "phase": "Pending"}),
        "Progressing",
        "Pending",
    ),
    (
        "ready-false-but-phase-ready",
        builder(3, {"observedGeneration": 3, "phase": "Ready", "conditions": [NOT_READY]}),
        "Progressing",
        "1/2 daemons ready",
    ),
    (
        "no-generation-in-metadata",
        {"metadata": {"name": "x"}, "status": {"observedGeneration": 1, "conditions": [READY]}},
        "Healthy",
        "2/2",
    ),
]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize(
    ("obj", "expected", "phrase"),
    [pytest.param(obj, status, phrase, id=name) for name, obj, status, phrase in CASES],
)
def test_health(obj: dict[str, Any], expected: str, phrase: str, runtime: str) -> None:
    result = health(obj, runtime)
    assert result["status"] == expected, result
    assert phrase in result["message"], result


def test_the_argocd_cm_patch_is_the_script() -> None:
    """What the README tells people to apply is the script tested above."""
    patch = yaml.safe_load((HEALTH / "argocd-cm.yaml").read_text())
    assert patch == {"data": {ARGOCD_KEY: SCRIPT}}


def test_readme_and_chart_notes_point_to_it() -> None:
    readme = (REPO / "README.md").read_text()
    assert ARGOCD_KEY in readme and "health/builder.lua" in readme
    notes = (REPO / "charts" / "buildkit-operator" / "templates" / "NOTES.txt").read_text()
    assert "health/builder.lua" in notes
