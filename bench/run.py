"""Benchmarks of the operator's pure paths, printed as figures.

Each figure is measured side by side in one run, so ratios hold on a shared, noisy machine:
- a converged pass (render + plan on an unchanged world) against a first pass that issues
  certificates: the cost the operator pays per Builder per wake-up when nothing changed;
- certificate reuse against issuance;
- memory held per rendered Builder.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

from buildkit_operator.api import Builder
from buildkit_operator.api.names import label_value
from buildkit_operator.pki import ensure_tls
from buildkit_operator.reconcile.plan import plan
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def example(i: int) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": f"team-{i}", "namespace": "ci", "uid": f"uid-{i}"},
            "spec": {
                "replicas": 2,
                "nodeSelector": {"kubernetes.io/arch": "amd64"},
                "cache": {"size": "50Gi", "storageClassName": "fast-ssd"},
                "buildkitd": {
                    "maxParallelism": 4,
                    "registryMirrors": {"docker.io": ["mirror.internal:5000"]},
                },
            },
        }
    )


def per_call(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main() -> None:
    builder = example(0)
    sans = server_sans(builder)
    bundle = ensure_tls({}, name=builder.name, server_sans=sans, now=NOW)
    existing = bundle.secret_data()
    desired = render_builder(builder, bundle)
    owner = {"builder": builder.name, "uid": "uid-0", "label": label_value(builder.name)}
    live = {(o["kind"], o["metadata"]["name"]): o for o in desired}

    first = per_call(
        lambda: render_builder(
            builder, ensure_tls({}, name=builder.name, server_sans=sans, now=NOW)
        ),
        20,
    )
    converged = per_call(
        lambda: plan(
            builder.spec,
            render_builder(
                builder, ensure_tls(existing, name=builder.name, server_sans=sans, now=NOW)
            ),
            live,
            **owner,
        ),
        50,
    )
    issue = per_call(lambda: ensure_tls({}, name=builder.name, server_sans=sans, now=NOW), 20)
    reuse = per_call(lambda: ensure_tls(existing, name=builder.name, server_sans=sans, now=NOW), 50)
    assert plan(builder.spec, desired, live, **owner).converged

    tracemalloc.start()
    kept = [render_builder(example(i), bundle) for i in range(100)]
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"first pass (issue certificates + render): {first * 1e3:8.2f} ms per Builder")
    print(f"converged pass (reuse + render + plan):   {converged * 1e3:8.2f} ms per Builder")
    print(f"ratio first / converged:                  {first / converged:8.1f}x")
    print(f"certificate issue:                        {issue * 1e3:8.2f} ms")
    print(f"certificate reuse (parse + verify):       {reuse * 1e3:8.2f} ms")
    print(f"ratio issue / reuse:                      {issue / reuse:8.1f}x")
    print(f"memory per rendered Builder (2 daemons):  {size / len(kept) / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
