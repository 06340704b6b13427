"""The HTTP side: an asyncio Protocol over httptools (the HTTP/1.1 parser uvicorn uses).

Scoring is CPU-bound and takes well under a millisecond for typical requests, so each worker
process answers a request inline as soon as its body is complete: no task, no thread hop, no
framework layers (measured against aiohttp and uvicorn in bench/README.md). Keep-alive,
pipelining, chunked bodies and `Expect: 100-continue` come from the parser; request bodies are
capped by MAX_CONTENT_LENGTH before they are buffered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus

import httptools
import orjson

from modeldeploy.serving import codecs
from modeldeploy.serving.accept import Acceptor, ConnectionBoard
from modeldeploy.serving.metrics import ServeMetrics
from modeldeploy.serving.model import Model, PredictionError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_CONTENT_LENGTH = 6 * MIB
DEFAULT_PORT = 8080
# Idle keep-alive connections are closed after this long (the container's gunicorn uses 60 s).
KEEPALIVE_SECONDS = 60.0
# On SIGTERM, requests already arriving get this long to finish.
SHUTDOWN_GRACE_SECONDS = 5.0
# How long a refused upload is drained before its connection closes.
LINGER_SECONDS = 2.0

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_TEXT = b"text/plain; charset=utf-8"


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


class _Date:
    """The Date header, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


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
                return 405, _TEXT, b"use POST /invocations\n"
            return self.invoke(content_type, accept, body)
        if path == b"/ping":
            if method not in (b"GET", b"HEAD"):
                return 405, _TEXT, b"use GET /ping\n"
            return 200, _TEXT, b""
        if path == b"/execution-parameters" and method in (b"GET", b"HEAD"):
            return 200, b"application/json", self.execution_parameters
        if path == b"/metrics" and method in (b"GET", b"HEAD"):
            return 200, *self.metrics.exposition()
        return 404, _TEXT, b"not found; the server answers GET /ping and POST /invocations\n"

    def invoke(
        self, content_type: bytes | None, accept: bytes | None, body: bytes
    ) -> tuple[int, bytes, bytes]:
        if not body or body.isspace():
            return 204, _TEXT, b""
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
            return exc.status, _TEXT, exc.message.encode() + b"\n"
        except PredictionError as exc:
            return 400, _TEXT, f"unable to evaluate the payload: {exc}\n".encode()


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer each as soon as its body is complete."""

    def __init__(self, app: App, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.last_active = time.monotonic()
        self.in_request = False
        self.half_closed = False
        self.started = time.perf_counter_ns()  # when the current request began
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.content_type: bytes | None = None
        self.accept: bytes | None = None
        self.content_length = -1
        self.expect_continue = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = False  # answered early (413); ignore the rest of this request

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.closed(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._error_and_close(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._error_and_close(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.in_request = True
        self.started = time.perf_counter_ns()
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == b"accept":
            self.accept = value
        elif name == b"content-length":
            self.content_length = int(value) if value.isdigit() else -1
        elif name == b"expect":
            self.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        if self.content_length > self.app.max_body:
            self._refuse_too_large(self.content_length)
        elif self.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.refused:
            return
        self.body_size += len(chunk)
        if self.body_size > self.app.max_body:  # chunked bodies have no length up front
            self._refuse_too_large(self.body_size)
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_request = False
        if self.refused or self.transport is None:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        try:
            status, content_type, payload = self.app.handle(
                method, path, self.content_type, self.accept, body
            )
        except Exception:
            log.exception("error answering %s %s", method.decode(), path.decode("latin-1"))
            status, content_type, payload = 500, _TEXT, b"internal server error\n"
        keep_alive = self.parser.should_keep_alive() and not self.state.stopping
        # Counted before the answer leaves: a client holding it sees it in /metrics.
        self.app.metrics.request(path, status, self.started)
        self._respond(status, content_type, b"" if method == b"HEAD" else payload, keep_alive)

    # answers

    def _respond(
        self,
        status: int,
        content_type: bytes,
        payload: bytes,
        keep_alive: bool,
        linger: bool = False,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.half_closed:
            return
        connection = b""
        if not keep_alive:
            connection = b"Connection: close\r\n"
        elif self.parser.get_http_version() == "1.0":
            connection = b"Connection: keep-alive\r\n"
        transport.write(
            b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                status,
                _REASONS.get(status, b"Unknown"),
                self.state.date.get(),
                content_type,
                len(payload),
                connection,
                payload,
            )
        )
        if keep_alive:
            return
        if linger and transport.can_write_eof():
            # Closing with unread request bytes makes the kernel send a reset, which can destroy
            # the answer before the client reads it: send FIN, drain the rest, close a bit later.
            self.half_closed = True
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _refuse_too_large(self, size: int) -> None:
        self.refused = True
        self.body = []
        message = (
            f"request body of {size} bytes is over MAX_CONTENT_LENGTH ({self.app.max_body} bytes)"
        )
        # The rest of the body is not read: answer now and close the connection.
        self.app.metrics.request(self.url.split(b"?", 1)[0], 413, self.started)
        self._respond(413, _TEXT, message.encode() + b"\n", keep_alive=False, linger=True)

    def _error_and_close(self, status: int, message: str) -> None:
        self.refused = True
        self.app.metrics.request(b"", status, self.started)  # not a request of any route
        self._respond(status, _TEXT, message.encode() + b"\n", keep_alive=False)

    def close_if_idle(self, idle_before: float | None = None) -> bool:
        """Close the connection unless a request is arriving; True if closed or gone."""
        if self.transport is None:
            return True
        if self.in_request:
            return False
        if idle_before is not None and self.last_active > idle_before:
            return False
        self.transport.close()
        return True


class ServerState:
    def __init__(self, board: ConnectionBoard | None = None) -> None:
        self.connections: set[HttpProtocol] = set()
        self.date = _Date()
        self.stopping = False
        self.board = board

    def opened(self, connection: HttpProtocol) -> None:
        self.connections.add(connection)  # the acceptor has counted it on the board

    def closed(self, connection: HttpProtocol) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            if self.board is not None:
                self.board.add(-1)


async def _serve(
    app: App, sock: socket.socket, on_ready: Callable[[], None] | None, state: ServerState
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    acceptor = Acceptor(loop, sock, lambda: HttpProtocol(app, state), state.board)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS / 4)
            idle_before = time.monotonic() - KEEPALIVE_SECONDS
            for connection in list(state.connections):
                connection.close_if_idle(idle_before)

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
) -> None:
    """Serve on a listening socket until SIGTERM or SIGINT (blocking)."""
    app = App(model, max_body, workers=workers, metrics=metrics)
    # The standard loop: uvloop measured no faster here (one callback per request; the time
    # goes to parsing and scoring), so it is not a dependency.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_serve(app, sock, on_ready, ServerState(board)))
    finally:
        loop.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 if `host` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)
