"""What the pure parts of a pass share: the actions ``plan`` decides, the holds ``holds``
puts on them, and the plan itself. Kept apart so that neither module reads the other's
text: an action carries the paths it changes as data, and its ``reason`` is only for
people (logs and Events)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Verb = Literal["create", "patch", "recreate", "delete", "roll", "scale"]
Key = tuple[str, str]  # (kind, name)

WORKLOAD_KIND = "Deployment"
CLAIM_KIND = "PersistentVolumeClaim"


@dataclass(frozen=True)
class Action:
    """One change to one child. ``paths`` are the fields a patch or recreate changes (as
    ``drift`` names them); ``reason`` says the same for a person; ``replace`` names the
    lists to replace whole first (``drift.displaced_lists``)."""

    verb: Verb
    kind: str
    name: str
    obj: Mapping[str, Any] = field(repr=False)
    reason: str
    paths: tuple[str, ...] = ()
    # Lists an apply cannot repair (an item of our name under another key): replaced whole
    # before the apply.
    replace: tuple[str, ...] = ()
    # The live object's uid, for a delete or recreate: only that object is deleted.
    uid: str | None = None

    @property
    def key(self) -> Key:
        return (self.kind, self.name)

    @property
    def stops_daemon(self) -> bool:
        """Whether carrying it out stops a running daemon: a recreate, a removal, a
        certificate roll, or a change of the pod template (which the Deployment rolls
        out by replacing the pod)."""
        if self.kind != WORKLOAD_KIND or self.verb in ("create", "scale"):
            # A scale to zero stops a daemon too, but only one that must not run another
            # moment (see ``userns``): it is never held.
            return False
        if self.verb == "patch":
            return any(p == "spec.template" or p.startswith("spec.template.") for p in self.paths)
        return True


@dataclass(frozen=True)
class Held:
    """A change to daemon ``daemon`` held back: ``what`` would stop it, ``why`` it waits."""

    daemon: str
    what: str
    why: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    drifted: tuple[str, ...] = ()  # held back: "Deployment x-0: spec.replicas"
    missing: tuple[str, ...] = ()  # held back by noCreate: "Deployment x-0"
    waiting: tuple[str, ...] = ()  # objects still being deleted
    conflicts: tuple[str, ...] = ()  # objects of our names that are someone else's
    kept: tuple[str, ...] = ()  # cache claims that cannot change in place, with what to do
    held: tuple[Held, ...] = ()  # changes that would stop a daemon, waiting for it to be idle
    # Daemons a planned or held change would stop: the ones whose activity matters.
    disruptive: tuple[str, ...] = ()
    # Fields a mutating admission keeps other than applied, left as admitted (``admitted``):
    # "Deployment x-0: spec.template.spec.containers[buildkitd].image".
    rewritten: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        return not (self.actions or self.waiting or self.held)

    def touches_workload(self, name: str) -> bool:
        return any(a.kind == WORKLOAD_KIND and a.name == name for a in self.actions)


@dataclass(frozen=True)
class Outcome:
    """What one pass did, for the runner (when to run again) and metrics."""

    phase: str | None
    actions: tuple[str, ...] = ()
    requeue_after: float | None = None
    status_written: bool = False
    errors: tuple[str, ...] = ()
