"""Which model package groups exist in a region: a DescribeModelPackageGroup each, or one
listing of them all when that is cheaper.

A new ModelDeployment must learn whether its group exists before creating it (SageMaker refuses
a second create, the emulator overwrites the first group, tags and all). When resources arrive
in a burst (a thousand applied from git at once), one paginated ListModelPackageGroups answers
for all of them; a single new resource in a region of many groups is still one describe. The
choice is by cost: list when more lookups came in the last `trust` seconds than the last
listing took pages. A listing is believed for `trust` seconds: a group created elsewhere since
is refused at our create (SageMaker) and read again at the next pass.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from modeldeploy.providers.errors import ProviderError, TransientError, aws
from modeldeploy.providers.sagemaker.listing import list_all

Clock = Callable[[], float]


class GroupsView:
    def __init__(self, sm: Any, *, trust: float, clock: Clock = time.monotonic) -> None:
        self._sm = sm
        self._trust = trust
        self._clock = clock
        self._lock = threading.Lock()  # guards the maps; never held over a call
        self._refresh = threading.Lock()  # one listing at a time
        self._arns: dict[str, str] = {}
        self._created: dict[str, float] = {}  # group -> when this process created it
        self._listed_at = float("-inf")
        self._pages = 2  # what the last listing cost; before one, two lookups at once try it
        self._asked: deque[float] = deque(maxlen=10_000)  # when lookups came, recent ones
        self._refused = False  # the role may not list groups

    def lookup(self, group: str, describe: Callable[[str], str | None]) -> str | None:
        """The group's ARN, or None when it does not exist: from a listing at most `trust`
        seconds old, or from `describe` when listing would cost more than it answers."""
        now = self._clock()
        with self._lock:
            self._asked.append(now)
            while self._asked and self._asked[0] < now - self._trust:
                self._asked.popleft()
            worth_listing = len(self._asked) >= self._pages
        if self._refused or (not self._fresh() and not worth_listing):
            return describe(group)
        try:
            with self._refresh:
                if not self._fresh():  # another thread may have listed while this one waited
                    self._list()
        except TransientError:
            raise
        except ProviderError:
            # A role granted DescribeModelPackageGroup but not ListModelPackageGroups (the
            # operator's policy before it listed groups): describe, as before, from now on.
            self._refused = True
            return describe(group)
        with self._lock:
            return self._arns.get(group)

    def created(self, group: str, arn: str) -> None:
        with self._lock:
            self._arns[group] = arn
            self._created[group] = self._clock()

    def _fresh(self) -> bool:
        return self._clock() - self._listed_at <= self._trust

    def _list(self) -> None:
        started = self._clock()
        with aws("ListModelPackageGroups (every group in the region)"):
            items, pages = list_all(
                self._sm.list_model_package_groups, "ModelPackageGroupSummaryList"
            )
        arns = {item["ModelPackageGroupName"]: item["ModelPackageGroupArn"] for item in items}
        with self._lock:
            # A group created while the listing ran may be missing from it: keep the create.
            arns |= {g: self._arns[g] for g, t in self._created.items() if t >= started}
            self._created = {g: t for g, t in self._created.items() if t >= started}
            self._arns, self._listed_at, self._pages = arns, started, pages
