"""Shared views of one region's model package versions and endpoints.

One operator watches many ModelDeployments in few regions. Instead of a ListModelPackages and a
ListEndpoints per resource per pass, a region keeps one view of each, shared by every resource:

- one paginated listing of the whole region refreshes a view at most every `max_age` seconds,
  made by whichever pass first finds it older (the others read what it found);
- a group seen for the first time is listed on its own: the last region listing may predate it;
- this process's own writes go through at once (a new group or version, an approval); an
  endpoint it created is read, until it settles, from one listing of the region's recent
  changes (ListEndpoints LastModifiedTimeAfter, on the server's clock) shared by every endpoint
  created about then; one it updated or deleted is described until it has settled (a listing
  cannot tell a failed update rolled back from a finished one).

A steady resync so reads nothing remote most of the time, and what it reads is at most
`max_age` seconds old. Passes run in worker threads: every method is thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from modeldeploy.providers.errors import aws
from modeldeploy.providers.sagemaker.listing import PAGE, endpoint_statuses, list_all
from modeldeploy.remote import Endpoint, EndpointStatus

Clock = Callable[[], float]
STAGE_SUFFIXES = ("-staging", "-prod")  # naming.py: only the operator's endpoints are kept
# Endpoints just created are seen through one listing of the region's recent changes at most
# this often (seconds), and a listing this old is made again.
RECENT_SPACING = 0.5
RECENT_MARGIN = timedelta(seconds=2)
_SUMMARY_KEYS = ("ModelPackageVersion", "ModelPackageArn", "ModelApprovalStatus")


def _newest(summaries: list[dict], limit: int) -> list[dict]:
    # Sorted here: the newest version drives the pipeline, so no server's order is trusted.
    kept = [{k: s[k] for k in _SUMMARY_KEYS if k in s} for s in summaries]
    return sorted(kept, key=lambda s: s.get("ModelPackageVersion", 0), reverse=True)[:limit]


def _skipped(known: list[dict], listed: list[dict]) -> bool:
    """The listing lacks a version the view holds that is newer than the oldest it has."""
    arns = {s["ModelPackageArn"] for s in listed}
    oldest = min((s["ModelPackageVersion"] for s in listed), default=0)
    return any(
        s["ModelPackageArn"] not in arns and s["ModelPackageVersion"] >= oldest for s in known
    )


class _Refreshing:
    """Decides when a region listing is due, and lets one thread make it."""

    def __init__(self, max_age: float, clock: Clock) -> None:
        self.max_age = max_age
        self.clock = clock
        self.lock = threading.Lock()  # guards the view's maps; never held over a call
        self._refresh = threading.Lock()  # one region listing at a time
        self.listed_at = clock()  # an empty view is fresh: whatever it has not seen is listed

    def due(self) -> bool:
        return self.clock() - self.listed_at >= self.max_age

    def refresh(self, listing: Callable[[float], None]) -> None:
        if not self.due():
            return
        with self._refresh:
            if self.due():  # another thread may have listed while this one waited
                started = self.clock()
                listing(started)
                self.listed_at = started

    def expire(self) -> None:
        self.listed_at = float("-inf")


class VersionsView:
    """The newest versions (summaries, newest first) of every group this process has looked at."""

    def __init__(self, sm: Any, *, limit: int, max_age: float, clock: Clock = time.monotonic):
        self._sm = sm
        self._limit = limit
        self._when = _Refreshing(max_age, clock)
        self._groups: dict[str, list[dict]] = {}
        self._written: dict[str, float] = {}  # group -> when this process last wrote to it
        self._created: set[str] = set()  # created here, every write to it since known

    def versions(self, group: str) -> list[dict]:
        if self._groups:  # nothing to refresh before the first group is known
            self._when.refresh(self._list_region)
        with self._when.lock:
            known = self._groups.get(group)
        if known is None:
            known = self._list_group(group)
            with self._when.lock:
                known = self._groups.setdefault(group, known)
        return list(known)

    def group_created(self, group: str) -> None:
        self._write(group, lambda _: [])
        with self._when.lock:
            self._created.add(group)

    def created_empty(self, group: str) -> bool:
        """This process created the group, knows every write to it since, and made none."""
        with self._when.lock:
            return group in self._created and self._groups.get(group) == []

    def version_added(self, group: str, arn: str, version: int, status: str) -> None:
        summary = {"ModelPackageVersion": version, "ModelPackageArn": arn}
        summary["ModelApprovalStatus"] = status
        self._write(group, lambda old: _newest([summary, *(old or [])], self._limit))

    def approval_set(self, group: str, arn: str, status: str) -> None:
        def update(old: list[dict] | None) -> list[dict] | None:
            if old is None:
                return None
            changed = {"ModelApprovalStatus": status}
            return [{**s, **changed} if s["ModelPackageArn"] == arn else s for s in old]

        self._write(group, update)

    def forget(self, group: str) -> None:
        """What a write whose outcome is unknown may have changed: listed again on next use."""
        self._write(group, lambda _: None)
        with self._when.lock:
            self._created.discard(group)

    def _write(self, group: str, change: Callable[[list[dict] | None], list[dict] | None]) -> None:
        with self._when.lock:
            new = change(self._groups.get(group))
            if new is None:
                self._groups.pop(group, None)
            else:
                self._groups[group] = new
            self._written[group] = self._when.clock()

    def _list_group(self, group: str) -> list[dict]:
        with aws(f"ListModelPackages {group}"):
            page = self._sm.list_model_packages(
                ModelPackageGroupName=group,
                SortBy="CreationTime",
                SortOrder="Descending",
                MaxResults=min(self._limit, PAGE),
            )
        return _newest(page.get("ModelPackageSummaryList", []), self._limit)

    def _list_region(self, started: float) -> None:
        by_group: dict[str, list[dict]] = defaultdict(list)
        with aws("ListModelPackages (every versioned package in the region)"):
            summaries, _ = list_all(
                self._sm.list_model_packages,
                "ModelPackageSummaryList",
                ModelPackageType="Versioned",
                SortBy="CreationTime",
                SortOrder="Descending",
            )
        for summary in summaries:
            by_group[summary.get("ModelPackageGroupName", "")].append(summary)
        with self._when.lock:
            for group, known in list(self._groups.items()):
                # A write made while the listing ran may be missing from it: keep the write.
                if self._written.get(group, float("-inf")) >= started:
                    continue
                listed = _newest(by_group.get(group, []), self._limit)
                if _skipped(known, listed):
                    # Paging while versions are created can skip some (tokens are positions
                    # in a list that grows): the group is listed on its own at its next use.
                    del self._groups[group]
                else:
                    self._groups[group] = listed


@dataclass(frozen=True)
class _Created:
    config: str
    since: float  # this process's clock when the create was sent
    server_time: datetime | None  # the server's clock when it answered (its Date header)


class EndpointsView:
    """The status of every endpoint of the operator's naming in the region, as last listed;
    and of the endpoints this process has just created, from a listing of recent changes."""

    def __init__(self, sm: Any, *, max_age: float, clock: Clock = time.monotonic):
        self._sm = sm
        self._when = _Refreshing(max_age, clock)
        self._when.expire()  # nothing is known of endpoints before the first listing
        self._listed: dict[str, str] = {}
        self._touched: set[str] = set()
        self._created: dict[str, _Created] = {}
        self._recent: dict[str, str] = {}
        self._recent_started = float("-inf")
        self._recent_refresh = threading.Lock()

    def needs_describe(self, name: str) -> bool:
        """This process changed the endpoint and has not seen it settle since."""
        with self._when.lock:
            return name in self._touched

    def listed_status(self, name: str) -> str | None:
        """The status the last region listing gave; None when it did not list the endpoint."""
        self._when.refresh(self._list_region)
        with self._when.lock:
            return self._listed.get(name)

    def maybe_exists(self, name: str) -> bool:
        return self.needs_describe(name) or self.listed_status(name) is not None

    def touch(self, name: str) -> None:
        with self._when.lock:
            self._touched.add(name)
            self._created.pop(name, None)

    def created(self, name: str, config: str, server_time: datetime | None) -> None:
        """This process created the endpoint on `config`: until it settles, its status comes
        from a listing of the region's recent changes, shared by every endpoint created about
        then (a DescribeEndpoint each was two of the calls every pipeline made)."""
        with self._when.lock:
            self._touched.add(name)
            self._created[name] = _Created(config, self._when.clock(), server_time)

    def created_status(self, name: str) -> tuple[str, str] | None:
        """(status, config) of an endpoint this process created, from a listing made since;
        None when it was not created here, or the listing lacks it or shows it Failed (a
        listing has no failure reason): the caller describes it."""
        with self._when.lock:
            created = self._created.get(name)
        if created is None:
            return None
        self._list_recent(created.since)
        with self._when.lock:
            status = self._recent.get(name)
            if status is None or status == EndpointStatus.FAILED:
                return None
            if not EndpointStatus.is_transitional(status):
                self._listed[name] = status
                self._touched.discard(name)
                self._created.pop(name, None)
            return status, created.config

    def described(self, name: str, endpoint: Endpoint | None) -> None:
        """What a DescribeEndpoint said: the endpoint has settled unless it is transitional."""
        with self._when.lock:
            if endpoint is None:
                self._listed.pop(name, None)
            else:
                self._listed[name] = endpoint.status
            if endpoint is None or not EndpointStatus.is_transitional(endpoint.status):
                self._touched.discard(name)
                self._created.pop(name, None)

    def _list_region(self, started: float) -> None:
        with aws("ListEndpoints (every endpoint in the region)"):
            statuses = endpoint_statuses(self._sm)
        listed = {name: s for name, s in statuses.items() if name.endswith(STAGE_SUFFIXES)}
        with self._when.lock:
            self._listed = listed

    def _recent_is_fresh(self, since: float) -> bool:
        started = self._recent_started
        return started >= since and self._when.clock() - started <= RECENT_SPACING

    def _list_recent(self, since: float) -> None:
        """Make sure a listing of recent changes started after `since` and is fresh: one thread
        lists (at most one listing per RECENT_SPACING seconds), the others read what it found."""
        with self._recent_refresh:
            if self._recent_is_fresh(since):
                return
            wait = self._recent_started + RECENT_SPACING - self._when.clock()
            if wait > 0:
                time.sleep(wait)
            started = self._when.clock()
            with self._when.lock:
                times = [c.server_time for c in self._created.values()]
            kwargs: dict[str, Any] = {}
            if times and None not in times:
                # The server's own clock, so no skew: everything changed since the oldest
                # create still settling (Date headers are whole seconds; a margin on top).
                kwargs["LastModifiedTimeAfter"] = min(times) - RECENT_MARGIN  # type: ignore[type-var]
            with aws("ListEndpoints (recently changed)"):
                recent = endpoint_statuses(self._sm, **kwargs)
            with self._when.lock:
                self._recent = recent
                self._recent_started = started
