"""The daemons a Builder's spec asks for: one pool of ``replicas`` daemons, or one set per
entry of ``pools``. Every part of the operator that walks the daemons (render, status,
connect) takes them from here, so names, pools and platforms agree everywhere.

Without pools, daemon ``i`` has id ``i`` and is named ``<base>-<i>`` as it always was; in a
pool its id is ``<i>-<platform slug>`` (``team-a-0-arm64``), so adding or reordering pools
never renames another pool's daemons or hands one pool's cache to another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from .autoscale import AutoscaleSpec
from .builder import Builder
from .names import ChildNames
from .pools import Pool, pool_slug

ARCH_LABEL = "kubernetes.io/arch"
OS_LABEL = "kubernetes.io/os"


@dataclass(frozen=True)
class Daemon:
    id: str  # the suffix of its names and the value of its buildkit.dev/daemon label
    pool: Pool | None

    @property
    def platform(self) -> str | None:
        return self.pool.platform if self.pool else None


def daemon_id(index: int, pool: Pool | None) -> str:
    return str(index) if pool is None else f"{index}-{pool_slug(pool.platform)}"


def daemons(builder: Builder) -> list[Daemon]:
    """The daemon slots. With autoscale, ``replicas`` holds the count decided for the pass
    (``with_counts``): the spec's own is unset."""
    spec = builder.spec
    if not spec.pools:
        return [Daemon(daemon_id(i, None), None) for i in range(spec.replicas)]
    return [Daemon(daemon_id(i, pool), pool) for pool in spec.pools for i in range(pool.replicas)]


def autoscaled(builder: Builder) -> list[tuple[Pool | None, AutoscaleSpec]]:
    """The sets of daemons whose count follows the load: the Builder's, or each pool's."""
    spec = builder.spec
    if spec.autoscale is not None:
        return [(None, spec.autoscale)]
    return [(pool, pool.autoscale) for pool in spec.pools if pool.autoscale is not None]


def with_counts(builder: Builder, counts: Mapping[str | None, int]) -> Builder:
    """The Builder with each autoscaled set's count (keyed by its pool's platform, None for
    the Builder's own set) put in its ``replicas``, so that everything that walks the
    daemons (render, status) walks the decided ones."""
    spec = builder.spec
    if None in counts and spec.autoscale is not None:
        spec = spec.model_copy(update={"replicas": counts[None]})
    elif spec.pools:
        pools = [
            pool.model_copy(update={"replicas": counts[pool.platform]})
            if pool.autoscale is not None and pool.platform in counts
            else pool
            for pool in spec.pools
        ]
        spec = spec.model_copy(update={"pools": pools})
    return builder.model_copy(update={"spec": spec})


def has_many_daemons(every: list[Daemon]) -> bool:
    """Whether a Builder's daemons (``daemons(builder)``: ``replicas``, or every pool's
    summed) are more than one: only then does it have a headless Service giving each
    daemon a name of its own, and a PodDisruptionBudget. Daemons asleep (idleTimeout)
    count: their Deployments and names are kept."""
    return len(every) > 1


def daemon_address(builder: Builder, daemon: Daemon, every: list[Daemon]) -> str:
    """Where a client reaches one daemon: its own name under the headless Service, or,
    for a Builder's only daemon (no headless Service), the Builder's Service, which has
    that daemon alone behind it."""
    names = ChildNames(builder.name)
    if not has_many_daemons(every):
        return names.endpoint(builder.namespace)
    return f"tcp://{names.daemon_host(daemon.id, builder.namespace)}:1234"


def daemon_names(builder: Builder) -> list[str]:
    names = ChildNames(builder.name)
    return [names.daemon(d.id) for d in daemons(builder)]


def node_labels(pool: Pool) -> dict[str, str]:
    """The well-known node labels that put a pool's pods on its architecture."""
    return {OS_LABEL: pool.os, ARCH_LABEL: pool.arch}


@dataclass(frozen=True)
class Activity:
    """What one daemon was doing when asked.

    ``in_flight`` is the number of builds running, or None when the daemon could not be
    asked (``reason`` says why). ``last_build`` is when the latest build the daemon
    remembers started (in flight) or completed, None when it remembers none or was not
    asked."""

    in_flight: int | None
    last_build: datetime | None = None
    reason: str = ""

    @property
    def known(self) -> bool:
        return self.in_flight is not None

    @property
    def building(self) -> bool:
        return bool(self.in_flight)

    def idle_for(self, now: datetime, started: datetime | None = None) -> float | None:
        """Seconds without a build until ``now``: since the last build, or else since
        ``started`` (when the daemon started, remembering no build); None when building or
        unknown."""
        if not self.known or self.building:
            return None
        since = self.last_build or started
        return None if since is None else max(0.0, (now - since).total_seconds())


UNKNOWN = Activity(None, None, "not asked")
