"""buildkitd's Prometheus metrics: off by default, because the port that serves them
serves more than metrics."""

from __future__ import annotations

from pydantic import Field, StrictBool

from .camel_model import CamelModel


class MetricsSpec(CamelModel):
    """buildkitd's own Prometheus metrics."""

    enabled: StrictBool = Field(
        False,
        description=(
            "Serve buildkitd's debug address on port 6060 (named metrics) of each daemon, "
            "with prometheus.io scrape annotations on the pods: /metrics (builds counted by "
            "status, build durations, gRPC calls). Off by default: the same unauthenticated "
            "port also serves Go profiles and the daemon's cache records and accepts GC, "
            "compaction and cache-load requests; admit only your Prometheus to it (a "
            "NetworkPolicy)."
        ),
    )
