"""Shared views of one region's model package versions and endpoints.

One operator watches many ModelDeployments in few regions. Instead of a ListModelPackages and a
ListEndpoints per resource per pass, a region keeps one view of each, shared by every resource:

- one paginated listing of the whole region refreshes a view at most every `max_age` seconds,
  made by whichever pass first finds it older (the others read what it found);
- a group seen for the first time is listed on its own: the last region listing may predate it;
- this process's own writes go through at once (a new group or version, an approval), and an
  endpoint it created, updated or deleted is described, never read from a listing, until it
  has settled.

A steady resync so reads nothing remote most of the time, and what it reads is at most
`max_age` seconds old. Passes run in worker threads: every method is thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from modeldeploy.providers.errors import aws
from modeldeploy.remote import Endpoint, EndpointStatus

Clock = Callable[[], float]
PAGE = 100  # the most ListModelPackages and ListEndpoints return per call
STAGE_SUFFIXES = ("-staging", "-prod")  # naming.py: only the operator's endpoints are kept
_SUMMARY_KEYS = ("ModelPackageVersion", "ModelPackageArn", "ModelApprovalStatus")


def _pages(call: Callable[..., dict], key: str, **kwargs: Any) -> Iterator[dict]:
    kwargs["MaxResults"] = PAGE
    while True:
        page = call(**kwargs)
        yield from page.get(key, [])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


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
            for summary in _pages(
                self._sm.list_model_packages,
                "ModelPackageSummaryList",
                ModelPackageType="Versioned",
                SortBy="CreationTime",
                SortOrder="Descending",
            ):
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


class EndpointsView:
    """The status of every endpoint of the operator's naming in the region, as last listed."""

    def __init__(self, sm: Any, *, max_age: float, clock: Clock = time.monotonic):
        self._sm = sm
        self._when = _Refreshing(max_age, clock)
        self._when.expire()  # nothing is known of endpoints before the first listing
        self._listed: dict[str, str] = {}
        self._touched: set[str] = set()

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

    def described(self, name: str, endpoint: Endpoint | None) -> None:
        """What a DescribeEndpoint said: the endpoint has settled unless it is transitional."""
        with self._when.lock:
            if endpoint is None:
                self._listed.pop(name, None)
            else:
                self._listed[name] = endpoint.status
            if endpoint is None or not EndpointStatus.is_transitional(endpoint.status):
                self._touched.discard(name)

    def _list_region(self, started: float) -> None:
        with aws("ListEndpoints (every endpoint in the region)"):
            listed = {
                item["EndpointName"]: item.get("EndpointStatus", "")
                for item in _pages(self._sm.list_endpoints, "Endpoints")
                if item["EndpointName"].endswith(STAGE_SUFFIXES)
            }
        with self._when.lock:
            self._listed = listed
