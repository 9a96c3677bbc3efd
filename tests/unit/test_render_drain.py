"""What the pods get so that no stop kills a build: the preStop drain and the grace period
covering it, bounded probes, the disruption budget, and the metrics port when asked for."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from buildkit_operator.api import Builder
from buildkit_operator.pki import ensure_tls
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def render(**spec: Any) -> list[dict[str, Any]]:
    b = Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": "u"},
            "spec": spec,
        }
    )
    bundle = ensure_tls({}, name="team-a", server_sans=server_sans(b), now=NOW)
    return render_builder(b, bundle)


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    dep = next(o for o in objects if o["kind"] == "Deployment")
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def test_grace_period_covers_the_drain() -> None:
    for grace in (0, 600, 1800):
        spec = pod_spec(render(drain={"gracePeriodSeconds": grace}))
        assert spec["terminationGracePeriodSeconds"] > grace
        script = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert script[:2] == ["sh", "-c"] and f"+ {grace} ))" in script[2]


def _fake_bin(tmp: Path, output: str, exit_code: int = 0) -> Path:
    """buildctl answering ``output``; ``sleep`` and ``date`` on a fake clock that only sleeps
    advance (no real waiting): ``date`` prints the seconds slept so far."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    slept = tmp / "slept"
    slept.write_text("")
    scripts = {
        "buildctl": f"printf '{output}'\nexit {exit_code}\n",
        "sleep": f'echo "$1" >> {slept}\n',
        "date": f"awk '{{s += $1}} END {{print s + 0}}' {slept}\n",
    }
    for name, body in scripts.items():
        fake = bin_dir / name
        fake.write_text(f"#!/bin/sh\n{body}")
        fake.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("history", "exit_code", "waits"),
    [
        ("STARTED\\nCOMPLETE\\n", 0, True),  # a build in flight
        ("COMPLETE\\nCOMPLETE\\n", 0, False),  # only finished builds
        ("", 0, False),  # no build ever
        ("", 1, False),  # the daemon does not answer: nothing to wait for
    ],
)
@pytest.mark.parametrize("grace", [3, 10])
def test_pre_stop_waits_only_while_a_build_is_in_flight(
    tmp_path: Path, history: str, exit_code: int, waits: bool, grace: int
) -> None:
    """The hook as the container's shell runs it, with buildctl answering as BuildKit's
    `debug histories --format {{.Type}}` does: it waits while a build is in flight, at most
    the grace period (on a fake clock: sleeping is counted, not done)."""
    spec = pod_spec(render(drain={"gracePeriodSeconds": grace}))
    command = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    bin_dir = _fake_bin(tmp_path, history, exit_code)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(command, env=env, check=True, timeout=30)
    took = sum(int(s) for s in (tmp_path / "slept").read_text().split())
    if waits:
        assert grace <= took < grace + 2, took  # the whole grace period, and no longer
    else:
        assert took == 0, took


def test_disruption_budget_lets_one_daemon_go_at_a_time() -> None:
    objects = render(replicas=3)
    (budget,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    service = next(o for o in objects if o["kind"] == "Service")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "u"


def test_metrics_port_only_when_enabled() -> None:
    off = pod_spec(render())["containers"][0]
    assert "--debugaddr" not in off["args"]
    assert [p["name"] for p in off["ports"]] == ["buildkitd"]
    objects = render(metrics={"enabled": True})
    on = pod_spec(objects)["containers"][0]
    assert on["args"][on["args"].index("--debugaddr") + 1] == "0.0.0.0:6060"
    assert {"name": "metrics", "containerPort": 6060, "protocol": "TCP"} in on["ports"]
    dep = next(o for o in objects if o["kind"] == "Deployment")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "6060"
