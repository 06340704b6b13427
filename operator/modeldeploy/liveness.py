"""Liveness that means something: the operator is alive only while it can reach the API server.

kopf's /healthz answers as long as the event loop runs, so an operator stranded on an address
that no longer answers (or whose credentials were revoked) would look healthy forever. This
probe asks the API server for its version with the operator's own connection (the kubernetes
client configured by kopf's login) and fails once it has not answered for a grace period, so
the kubelet restarts the pod and the new process reads its configuration again. A short outage
(an API server upgrade) stays within the grace and restarts nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

GRACE_ENV = "MODELDEPLOY_LIVENESS_GRACE_SECONDS"
DEFAULT_GRACE = 300.0


class ApiServerLost(Exception):
    """The API server has not answered for longer than the grace period."""


def ask_api_server() -> None:
    """One cheap authenticated call, GET /version, with the operator's own connection."""
    from kubernetes import client

    client.VersionApi().get_code(_request_timeout=5)


class ApiWatchdog:
    def __init__(
        self,
        check: Callable[[], None] = ask_api_server,
        grace: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.check = check
        self.grace = grace if grace is not None else float(os.environ.get(GRACE_ENV, DEFAULT_GRACE))
        self.clock = clock
        self.last_answer = clock()  # the start counts: kopf has just logged in

    def probe(self) -> str:
        """What the liveness endpoint shows; raises (kopf then answers 500) past the grace."""
        try:
            self.check()
        except Exception as err:
            silent = self.clock() - self.last_answer
            if silent > self.grace:
                raise ApiServerLost(
                    f"the API server has not answered for {silent:.0f}s (grace {self.grace:.0f}s,"
                    f" {GRACE_ENV}): {type(err).__name__}: {err}"
                ) from err
            return f"no answer for {silent:.0f}s (restart after {self.grace:.0f}s): {err}"
        self.last_answer = self.clock()
        return "ok"
