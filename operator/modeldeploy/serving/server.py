"""The HTTP side: routes (App), one worker's event loop, the listening socket.

Scoring is CPU-bound and takes well under a millisecond for typical requests, so each worker
process answers a request inline as soon as its body is complete (serving/protocol.py): no task,
no thread hop, no framework layers (measured against aiohttp and uvicorn in bench/README.md).
Request bodies are capped by MAX_CONTENT_LENGTH before they are buffered; the other limits on
what a client may send or hold are in serving/limits.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

import orjson

from modeldeploy.serving import codecs
from modeldeploy.serving.accept import Acceptor, ConnectionBoard
from modeldeploy.serving.limits import MAX_ERROR_BODY, Limits
from modeldeploy.serving.metrics import ServeMetrics
from modeldeploy.serving.model import Model, PredictionError
from modeldeploy.serving.protocol import TEXT, HttpProtocol, ServerState

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_CONTENT_LENGTH = 6 * MIB
DEFAULT_PORT = 8080
# On SIGTERM, requests already arriving get this long to finish.
SHUTDOWN_GRACE_SECONDS = 5.0


def max_content_length() -> int:
    """MAX_CONTENT_LENGTH from the environment (bytes), as the container reads it."""
    raw = os.environ.get("MAX_CONTENT_LENGTH", "").strip()
    if not raw:
        return DEFAULT_MAX_CONTENT_LENGTH
    value = int(raw)
    if value <= 0:
        raise ValueError(f"MAX_CONTENT_LENGTH must be a positive number of bytes, got {raw!r}")
    return value


def default_port() -> int:
    """SAGEMAKER_BIND_TO_PORT, else 8080."""
    return int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "").strip() or DEFAULT_PORT)


class App:
    """Routes a complete request to a (status, content type, body) answer."""

    def __init__(
        self, model: Model, max_body: int, workers: int = 1, metrics: ServeMetrics | None = None
    ) -> None:
        self.model = model
        self.max_body = max_body
        self.metrics = metrics or ServeMetrics()  # this process alone, unless a board is shared
        self.execution_parameters = orjson.dumps(
            {
                "MaxConcurrentTransforms": workers,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": max(1, max_body // MIB),
            }
        )

    def handle(
        self,
        method: bytes,
        path: bytes,
        content_type: bytes | None,
        accept: bytes | None,
        body: bytes,
    ) -> tuple[int, bytes, bytes]:
        if path == b"/invocations":
            if method != b"POST":
                return 405, TEXT, b"use POST /invocations\n"
            return self.invoke(content_type, accept, body)
        if path == b"/ping":
            if method not in (b"GET", b"HEAD"):
                return 405, TEXT, b"use GET /ping\n"
            return 200, TEXT, b""
        if path == b"/execution-parameters" and method in (b"GET", b"HEAD"):
            return 200, b"application/json", self.execution_parameters
        if path == b"/metrics" and method in (b"GET", b"HEAD"):
            return 200, *self.metrics.exposition()
        return 404, TEXT, b"not found; the server answers GET /ping and POST /invocations\n"

    def invoke(
        self, content_type: bytes | None, accept: bytes | None, body: bytes
    ) -> tuple[int, bytes, bytes]:
        if not body or body.isspace():
            return 204, TEXT, b""
        try:
            kind = codecs.request_type(content_type)
            media = codecs.response_type(accept)
            if kind == codecs.CSV:
                rows = codecs.parse_csv(body, self.model.num_feature)
            else:
                rows = codecs.parse_libsvm(body, self.model.num_feature)
            predictions = self.model.predict(rows)
            self.metrics.rows(rows.shape[0])
            return 200, media.encode(), codecs.encode(predictions, media)
        except codecs.RequestError as exc:
            return exc.status, TEXT, _bounded(exc.message)
        except PredictionError as exc:
            return 400, TEXT, _bounded(f"unable to evaluate the payload: {exc}")


def _bounded(message: str) -> bytes:
    """An error body: the message, cut to MAX_ERROR_BODY bytes, and a line end."""
    body = message.encode()
    if len(body) > MAX_ERROR_BODY:
        body = body[: MAX_ERROR_BODY - 6] + b" [cut]"
    return body + b"\n"


async def _serve(
    app: App, sock: socket.socket, on_ready: Callable[[], None] | None, state: ServerState
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    limits = state.limits
    acceptor = Acceptor(loop, sock, lambda: HttpProtocol(app, state), state.board, limits=limits)
    state.on_closed = acceptor.connection_closed

    async def sweep() -> None:
        # Heads and bodies that stopped arriving, and idle keep-alive connections.
        while True:
            await asyncio.sleep(limits.sweep_interval)
            now = time.monotonic()
            for connection in list(state.connections):
                connection.check_deadlines(now)

    sweeper = loop.create_task(sweep())
    if on_ready is not None:
        on_ready()
    await stop.wait()
    # Stop accepting, close idle connections, give requests in flight a moment to finish.
    state.stopping = True
    sweeper.cancel()
    acceptor.close()
    deadline = loop.time() + SHUTDOWN_GRACE_SECONDS
    while loop.time() < deadline:
        pending = [c for c in list(state.connections) if not c.close_if_idle()]
        if not pending:
            break
        await asyncio.sleep(0.05)
    for connection in list(state.connections):
        if connection.transport is not None:
            connection.transport.abort()


def run(
    model: Model,
    sock: socket.socket,
    max_body: int,
    workers: int = 1,
    on_ready: Callable[[], None] | None = None,
    board: ConnectionBoard | None = None,
    metrics: ServeMetrics | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve on a listening socket until SIGTERM or SIGINT (blocking)."""
    app = App(model, max_body, workers=workers, metrics=metrics)
    state = ServerState(limits or Limits.from_env(), board)
    # The standard loop: uvloop measured no faster here (one callback per request; the time
    # goes to parsing and scoring), so it is not a dependency.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_serve(app, sock, on_ready, state))
    finally:
        loop.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 if `host` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)
