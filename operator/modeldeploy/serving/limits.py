"""What one client may cost `modeldeploy serve`: sizes, counts and times, from the environment.

Every limit has a default that no ordinary client comes near, and a `MODELDEPLOY_SERVE_*`
variable to change it (the table is in README's serve section). A request line over its limit
is answered 414, headers over theirs 431, a request whose headers or body stop arriving (or
whose body trickles in slower than `min_body_rate`) 408,
each with a short plain-text body and the connection closed. While a worker holds
`max_connections` connections it stops accepting (the kernel queues new ones, or another worker
takes them) and starts again once one closes.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, fields

PREFIX = "MODELDEPLOY_SERVE_"
# Descriptors a worker keeps for itself (the model, logs, the boards, the listening socket).
_RESERVED_FDS = 64
# Error bodies are plain text and short: an echoed header is cut to this many characters.
ECHO_CHARS = 80
MAX_ERROR_BODY = 1024


def _default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(1, min(1000, soft - _RESERVED_FDS))


@dataclass(frozen=True)
class Limits:
    """The per-worker limits; the field names are the variables' suffixes, upper-cased."""

    max_request_line: int = 8192  # bytes of method, URL and version (414)
    max_headers: int = 100  # header fields in one request (431)
    max_header_bytes: int = 32768  # bytes of all header fields together (431)
    header_timeout: float = 20.0  # seconds from a request's first byte to its last header (408)
    body_timeout: float = 30.0  # seconds a body may go without a byte arriving (408)
    # bytes/s a body must average once it has taken body_timeout seconds: a byte every few
    # seconds never stalls, yet would hold a connection for days (408)
    min_body_rate: float = 1024.0
    keepalive_timeout: float = 60.0  # seconds an idle keep-alive connection is kept
    max_connections: int = 0  # per worker; 0 here means: from RLIMIT_NOFILE, at most 1000
    accept_log_interval: float = 10.0  # seconds between two logs of failing accept()s

    def __post_init__(self) -> None:
        if self.max_connections == 0:
            object.__setattr__(self, "max_connections", _default_max_connections())

    @property
    def sweep_interval(self) -> float:
        """How often connections are checked against the timeouts."""
        shortest = min(self.header_timeout, self.body_timeout, self.keepalive_timeout)
        return min(1.0, max(0.05, shortest / 4))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """The limits, each from MODELDEPLOY_SERVE_<NAME> when set; ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for field in fields(cls):
            name = PREFIX + field.name.upper()
            raw = env.get(name, "").strip()
            if not raw:
                continue
            kind = int if field.type == "int" else float
            try:
                value = kind(raw)
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise ValueError(f"{name} must be {what}, got {raw!r}") from None
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {raw!r}")
            values[field.name] = value
        return cls(**values)  # type: ignore[arg-type]


def echo(value: bytes | str) -> str:
    """A client's header value, quoted and cut short, for an error message."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if len(text) > ECHO_CHARS:
        return repr(text[:ECHO_CHARS]) + f" (cut; {len(text)} characters)"
    return repr(text)
