"""High availability through kopf's peering: several `modeldeploy run` replicas, one active.

kopf's peering (a ClusterKopfPeering, or a KopfPeering per watched namespace, named by
`--peering`) holds a record per running operator: its priority, lifetime and last keep-alive.
An operator pauses (stops watching, stops its timers) while it sees a live peer of a higher or
the *same* priority, and resumes when no such peer is left. So the priorities must differ, and
the scheme decides who is active:

* the default priority is minus the start time in microseconds: the **oldest** replica is the
  active one. A replica that starts later (a restarted pod, a rolling update's new pod) has a
  lower priority and stays the standby: it never pre-empts the active one, whose in-flight
  passes would otherwise overlap the newcomer's first ones.
* a replica killed without a goodbye (SIGKILL, a lost node) leaves its record behind until its
  lifetime runs out; the standby then resumes. kopf refreshes the record 5 to 10 s before it
  expires (at least every second), so the lifetime bounds the takeover: with the default 10 s
  the standby acts about 10 to 12 s after the kill.
* a replica that is paused from the start: mandatory peering starts every operator paused until
  it has read the peering object, so a standby never acts before it knows of the active one.

Nothing here runs without `--peering NAME` (or MODELDEPLOY_PEERING): the default stays kopf's
standalone mode, one replica, no peering objects.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module for its flags; kopf only when it runs
    import kopf

ENV_NAME = "MODELDEPLOY_PEERING"
ENV_PRIORITY = "MODELDEPLOY_PEERING_PRIORITY"
ENV_LIFETIME = "MODELDEPLOY_PEERING_LIFETIME"
DEFAULT_LIFETIME = 10
# kopf refreshes a record every `lifetime - randint(5, 10)` s, at least every second: from 6 s
# on a live operator's record has 5 s of slack for a slow API server before a standby resumes.
MIN_LIFETIME = 6


@dataclass(frozen=True)
class Peering:
    """How this process takes part in peering; `name` None means standalone."""

    name: str | None = None
    priority: int = 0
    lifetime: int = DEFAULT_LIFETIME

    @property
    def standalone(self) -> bool:
        return self.name is None

    def operator_kwargs(self) -> dict[str, Any]:
        """The `kopf.operator(...)` arguments: standalone, or mandatory peering by name."""
        if self.standalone:
            return {"standalone": True}
        return {"standalone": False, "peering_name": self.name, "priority": self.priority}

    def describe(self) -> str:
        if self.standalone:
            return "standalone (no peering)"
        return f"peering {self.name!r}, priority {self.priority}, lifetime {self.lifetime}s"


def oldest_first_priority(now_ns: int | None = None) -> int:
    """Minus the start time in microseconds: earlier starts rank higher (about -1.7e15, well
    inside the 2**53 that any JSON reader of the peering object keeps exactly)."""
    return -((time.time_ns() if now_ns is None else now_ns) // 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help=f"run as one of several replicas, one active, through kopf's peering object NAME "
        f"(a ClusterKopfPeering; with --namespace a KopfPeering in each namespace); "
        f"default: {ENV_NAME}, else standalone",
    )
    parser.add_argument(
        "--peering-priority",
        type=int,
        metavar="N",
        help=f"this replica's priority, unique among the peers (default: {ENV_PRIORITY}, else "
        "derived from the start time, so the oldest replica is the active one)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        metavar="SECONDS",
        help=f"how long this replica's keep-alive counts: about the time a standby takes over "
        f"after this one dies (default: {ENV_LIFETIME}, else {DEFAULT_LIFETIME}; at least "
        f"{MIN_LIFETIME})",
    )


def from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ, now_ns: int | None = None
) -> Peering:
    """Flags first, then the environment; a bad value stops the start with a clear message."""
    name = getattr(args, "peering", None) or environ.get(ENV_NAME, "").strip() or None
    if name is None:
        return Peering()
    priority = getattr(args, "peering_priority", None)
    if priority is None and environ.get(ENV_PRIORITY, "").strip():
        priority = _int(ENV_PRIORITY, environ[ENV_PRIORITY])
    lifetime = getattr(args, "peering_lifetime", None)
    if lifetime is None:
        raw = environ.get(ENV_LIFETIME, "").strip()
        lifetime = _int(ENV_LIFETIME, raw) if raw else DEFAULT_LIFETIME
    if lifetime < MIN_LIFETIME:
        raise ValueError(f"peering lifetime {lifetime}s is below {MIN_LIFETIME}s")
    if priority is None:
        priority = oldest_first_priority(now_ns)
    return Peering(name=name, priority=priority, lifetime=lifetime)


def _int(what: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{what} must be an integer, not {raw!r}") from None


def configure(settings: kopf.OperatorSettings, peering: Peering) -> None:
    """What kopf.operator's arguments cannot say: the lifetime. The rest (standalone, name,
    priority) goes through `peering.operator_kwargs()`, which kopf applies after this."""
    settings.peering.lifetime = peering.lifetime
    # Keep-alives every few seconds are not news; pauses and resumes are logged regardless.
    settings.peering.stealth = True
