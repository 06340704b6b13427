"""`modeldeploy serve` against hostile and clumsy clients.

- The request corpus (tests/corpus/requests/cases.json): each bad (or borderline) request sent
  over a raw socket to a real server with a real XGBoost model, its status and body checked.
- Raw-socket cases for what a corpus of whole requests cannot express: heads and bodies that
  stop arriving, trickled headers, oversized heads streamed, the connection cap, and `accept()`
  failing for want of file descriptors.
- Property-based fuzzing (hypothesis, derandomized, a fixed number of examples) of the request
  parsers: codecs on bodies and headers, and the HTTP protocol on arbitrary bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving import Server

from modeldeploy.serving import codecs
from modeldeploy.serving.limits import MAX_ERROR_BODY, Limits
from modeldeploy.serving.model import load_model
from modeldeploy.serving.protocol import HttpProtocol, ServerState
from modeldeploy.serving.server import App
from modeldeploy.serving.workers import serve_main
from modeldeploy.training.train import train

CORPUS = Path(__file__).parent / "corpus" / "requests" / "cases.json"
LIMIT = 65536
# A fixed budget: the same examples on every run, in a few seconds each.
FUZZ = settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("prefix", "") + value["repeat"] * value["times"] + value.get("suffix", "")
    return value


def _request(case: dict) -> bytes:
    """The bytes a case sends: its raw request, or one built from method, path, headers, body."""
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    if "raw" in case:
        return _text(case["raw"]).encode("latin-1")
    body = bytes.fromhex(case["body_hex"]) if "body_hex" in case else b""
    if "body" in case:
        body = _text(case["body"]).encode("utf-8")
    method = case.get("method", "POST")
    head = f"{method} {_text(case.get('path', '/invocations'))} HTTP/1.1\r\nHost: t\r\n"
    for name, value in case.get("headers", {}).items():
        head += f"{name}: {_text(value)}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode("utf-8") + body


def _read_answer(sock: socket.socket, timeout: float = 15.0) -> tuple[int, bytes]:
    """(status, body) of the first final answer on `sock` (a 100 Continue is skipped)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and not head.startswith(b"HTTP/1.1 100"):
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            if len(rest) >= length:
                return int(head.split()[1]), rest[:length]
        elif sep:  # interim 100 Continue
            data = rest
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"connection closed before a whole answer: {data[:200]!r}")
        data += chunk


def _exchange(port: int, payload: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)  # may be answered before the whole request is sent
        return _read_answer(sock)


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s; got {data[:200]!r}") from None
    return data


# --- the corpus --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("model"), progress=False).model_tar


@pytest.fixture(scope="module")
def corpus_server(model_tar: Path) -> Iterator[Server]:
    srv = Server(model_tar, env={"MAX_CONTENT_LENGTH": str(LIMIT)})
    yield srv
    assert srv.stop() == 0


CASES = json.loads(CORPUS.read_text())["cases"]


def test_the_corpus_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 90
    assert len({case["name"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_corpus_case(corpus_server: Server, case: dict) -> None:
    status, body = _exchange(corpus_server.port, _request(case))
    want = case["expect"]
    assert status == want["status"], body[:300]
    assert want["body"].encode() in body, body[:300]
    assert len(body) <= want.get("max_len", MAX_ERROR_BODY + 1 if status >= 400 else 10**7)


def test_the_server_is_well_after_the_corpus(corpus_server: Server) -> None:
    assert corpus_server.request("GET", "/ping")[0] == 200
    assert corpus_server.proc.poll() is None
    assert not [line for line in corpus_server.lines if "Traceback" in line]


# --- raw sockets: slow, half and oversized requests ---------------------------------------

TIMEOUTS = {
    "MODELDEPLOY_SERVE_HEADER_TIMEOUT": "1",
    "MODELDEPLOY_SERVE_BODY_TIMEOUT": "1",
    "MODELDEPLOY_SERVE_MIN_BODY_RATE": "100",
    "MODELDEPLOY_SERVE_KEEPALIVE_TIMEOUT": "2",
}


@pytest.fixture(scope="module")
def quick(model_tar: Path) -> Iterator[Server]:
    """A server whose head, body and keep-alive timeouts are one or two seconds."""
    srv = Server(model_tar, env={"MAX_CONTENT_LENGTH": str(LIMIT), **TIMEOUTS})
    yield srv
    assert srv.stop() == 0


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        (b"POST /invocati", b"request headers not complete within 1 s"),
        (
            b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n1,2",
            b"request body stalled",
        ),
    ],
    ids=["half-a-request-line", "half-a-body"],
)
def test_half_a_request_then_silence_is_408(quick: Server, sent: bytes, says: bytes) -> None:
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        sock.sendall(sent)
        answer = _closed_within(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert says in answer


def test_trickled_headers_are_cut_at_the_header_timeout(quick: Server) -> None:
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\n")
        started = time.monotonic()
        with pytest.raises(OSError):
            for _ in range(50):
                sock.sendall(b"X-Slow: a\r\n")
                time.sleep(0.2)
        assert time.monotonic() - started < 5


def test_a_body_trickled_slower_than_the_minimum_rate_is_408(quick: Server) -> None:
    """A byte every 0.2 s never stalls (the body timeout is 1 s), but 5 bytes/s is under
    MIN_BODY_RATE: the connection is cut once the body has taken BODY_TIMEOUT seconds."""
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n")
        sock.settimeout(0.2)
        started, answer = time.monotonic(), b""
        while not answer and time.monotonic() - started < 10:
            sock.sendall(b"1")
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(4096)  # read as it comes, before a send meets the reset
    assert time.monotonic() - started < 6
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body too slow" in answer


def test_a_silent_new_connection_and_an_idle_keep_alive_are_closed(quick: Server) -> None:
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        assert _closed_within(sock, 5) == b""  # never sent a byte: closed after 1 s, no answer
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_answer(sock)[0] == 200
        started = time.monotonic()
        assert _closed_within(sock, 6) == b""
        assert time.monotonic() - started > 1.5  # the keep-alive timeout, not the head's


def test_a_streamed_endless_header_is_431_and_not_buffered(quick: Server) -> None:
    """The answer comes once the head passes its limit; what follows is drained, not parsed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nX-Endless: ")
        with contextlib.suppress(OSError):  # the server closes after a short linger
            for _ in range(256):  # up to 16 MiB
                sock.sendall(b"a" * 65536)
        status, body = _read_answer(sock)
    assert status == 431 and b"request headers over" in body
    assert time.monotonic() - started < 10
    assert quick.request("GET", "/ping")[0] == 200


def test_a_streamed_huge_url_and_a_million_headers_are_refused_fast(quick: Server) -> None:
    started = time.monotonic()
    status, body = _exchange(quick.port, b"GET /" + b"a" * (4 * 1024 * 1024) + b" HTTP/1.1\r\n")
    assert status == 414 and b"request line over 8192 bytes" in body
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(1_000_000))
    status, body = _exchange(quick.port, b"GET /ping HTTP/1.1\r\n" + headers + b"\r\n")
    assert status == 431 and b"over 100 fields" in body
    assert time.monotonic() - started < 10


def test_answers_keep_flowing_beside_a_stalled_client(quick: Server) -> None:
    with socket.create_connection(("127.0.0.1", quick.port)) as stalled:
        stalled.sendall(b"POST /invocations HTTP/1.1\r\nContent-Length: 10\r\n\r\n1")
        for _ in range(5):
            assert quick.request("GET", "/ping")[0] == 200


# --- the connection cap and accept() failures ------------------------------------------------


def test_at_the_connection_cap_new_clients_wait_until_one_closes(model_tar: Path) -> None:
    env = {"MODELDEPLOY_SERVE_MAX_CONNECTIONS": "4", "MODELDEPLOY_SERVE_HEADER_TIMEOUT": "60"}
    srv = Server(model_tar, env=env)
    held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(4)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=1) as waiting:
            waiting.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
            waiting.settimeout(1)
            with pytest.raises(TimeoutError):
                waiting.recv(100)  # queued by the kernel, not accepted
            held.pop().close()
            assert _read_answer(waiting, timeout=5)[0] == 200
        assert any("the cap (MODELDEPLOY_SERVE_MAX_CONNECTIONS)" in line for line in srv.lines)
    finally:
        for sock in held:
            sock.close()
        assert srv.stop() == 0


class _LimitedServer(Server):
    """A server whose worker may open only `nofile` file descriptors."""

    def __init__(self, model: Path, nofile: int, env: dict[str, str]) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        command = [sys.executable, "-m", "modeldeploy.serving", "--model", str(model)]
        self.proc = subprocess.Popen(
            [*command, "--port", "0"],
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit,
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        assert self._started.wait(60) and self.proc.poll() is None, self.lines
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", "".join(self.lines)).group(1))


def test_out_of_descriptors_accept_backs_off_and_logs_once_per_interval(model_tar: Path) -> None:
    # A cap above the descriptor limit, so that accept() itself fails with EMFILE.
    env = {"MODELDEPLOY_SERVE_MAX_CONNECTIONS": "5000", "MODELDEPLOY_SERVE_HEADER_TIMEOUT": "60"}
    srv = _LimitedServer(model_tar, nofile=160, env=env)
    clients: list[socket.socket] = []
    try:
        for _ in range(300):
            clients.append(socket.create_connection(("127.0.0.1", srv.port)))
        time.sleep(3)
        failures = [line for line in srv.lines if "accept() failed" in line]
        assert 1 <= len(failures) <= 2, failures  # 3 s, one report per 10 s
        assert "Too many open files" in failures[0]
        for sock in clients:
            sock.close()
        clients.clear()
        deadline = time.monotonic() + 10
        while True:  # the queued connections drain, then the server answers again
            try:
                if srv.request("GET", "/ping")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no answer after the clients left"
            time.sleep(0.2)
    finally:
        for sock in clients:
            sock.close()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0


def test_limits_from_the_environment() -> None:
    assert Limits.from_env({}).max_headers == 100
    limits = Limits.from_env({"MODELDEPLOY_SERVE_MAX_HEADERS": "7"})
    assert limits.max_headers == 7
    with pytest.raises(ValueError, match="MODELDEPLOY_SERVE_HEADER_TIMEOUT must be positive"):
        Limits.from_env({"MODELDEPLOY_SERVE_HEADER_TIMEOUT": "0"})
    with pytest.raises(ValueError, match="MODELDEPLOY_SERVE_MAX_HEADERS must be a whole number"):
        Limits.from_env({"MODELDEPLOY_SERVE_MAX_HEADERS": "1.5"})
    assert 1 <= Limits().max_connections <= 1000


# --- fuzzing the parsers (hypothesis, a fixed budget) ----------------------------------------


@pytest.fixture(scope="module")
def app(model_tar: Path) -> App:
    return App(load_model(model_tar), LIMIT)


_NUMBERISH = st.text(alphabet="0123456789.,-+eEnaifINF :\n\r\t", max_size=400)
_MEDIA = st.one_of(
    st.none(),
    st.sampled_from([b"text/csv", b"text/libsvm", b"text/x-libsvm", b"application/json", b"*/*"]),
    st.binary(max_size=300),
)


@FUZZ
@given(
    body=st.one_of(st.binary(max_size=600), _NUMBERISH.map(str.encode)),
    content_type=_MEDIA,
    accept=_MEDIA,
)
def test_fuzz_any_body_and_headers_answer_2xx_or_4xx(
    app: App, body: bytes, content_type: bytes | None, accept: bytes | None
) -> None:
    status, _, payload = app.handle(b"POST", b"/invocations", content_type, accept, body)
    assert 200 <= status < 500, payload
    if status >= 400:
        assert len(payload) <= MAX_ERROR_BODY + 1


_FIELD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:g}"),
    st.integers(-(10**6), 10**6).map(str),
    st.just(""),
    st.just(" "),
)


@FUZZ
@given(
    st.integers(1, 6).flatmap(
        lambda cols: st.lists(
            st.lists(_FIELD, min_size=cols, max_size=cols), min_size=1, max_size=6
        )
    ),
    st.sampled_from(["\n", "\r\n"]),
)
def test_fuzz_csv_rows_equal_numpys_reading(rows: list[list[str]], line_end: str) -> None:
    body = line_end.join(",".join(row) for row in rows).encode()
    columns = len(rows[0])
    if not body.strip():
        return  # an empty payload is answered 204 before parsing
    # numpy's reading: every field through float(), an empty field as NaN.
    want = np.array([[float(v) if v.strip() else np.nan for v in row] for row in rows])
    got = codecs.parse_csv(body, columns)
    if body.strip() != body and want.shape[0] > 1:
        return  # blank rows at the ends are stripped as whitespace; compared elsewhere
    assert got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 1)),
            st.dictionaries(st.integers(0, 29), st.floats(width=32), max_size=30),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_libsvm_rows_equal_the_dense_reading(rows: list[tuple[int | None, dict]]) -> None:
    lines = []
    want = np.full((len(rows), 30), np.nan)
    for r, (label, pairs) in enumerate(rows):
        tokens = [] if label is None else [str(label)]
        tokens += [f"{i}:{v!r}" for i, v in pairs.items()]
        lines.append(" ".join(tokens))
        for i, v in pairs.items():
            want[r, i] = v
    body = "\n".join(lines).encode()
    if not any(pairs for _, pairs in rows):
        with pytest.raises(codecs.RequestError):
            codecs.parse_libsvm(body, 30)
        return
    if not lines[0] or not lines[-1]:
        return  # an empty first or last row is stripped as whitespace
    got = codecs.parse_libsvm(body, 30)
    dense = np.full(got.shape, np.nan)
    coo = got.tocoo()
    dense[coo.row, coo.col] = coo.data
    assert np.array_equal(dense, want, equal_nan=True)


class _Transport:
    """Enough of an asyncio transport to run HttpProtocol without a loop."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


_METHOD = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"FOO", b""])
_LINE = st.one_of(
    st.binary(max_size=60),
    st.tuples(st.binary(max_size=20), st.binary(max_size=80)).map(lambda t: t[0] + b": " + t[1]),
    st.sampled_from(
        [b"Content-Length: 5", b"Transfer-Encoding: chunked", b"Content-Type: text/libsvm"]
    ),
)
_REQUEST = st.tuples(
    _METHOD,
    st.sampled_from([b"/invocations", b"/ping", b"/", b"/metrics"]),
    st.lists(_LINE, max_size=8),
    st.one_of(_NUMBERISH.map(str.encode), st.binary(max_size=100)),
).map(lambda t: t[0] + b" " + t[1] + b" HTTP/1.1\r\n" + b"\r\n".join(t[2]) + b"\r\n\r\n" + t[3])


@FUZZ
@given(
    st.lists(st.one_of(_REQUEST, st.binary(max_size=200)), min_size=1, max_size=4),
    st.integers(1, 64),
)
def test_fuzz_http_bytes_never_raise_and_answer_2xx_or_4xx(
    app: App, requests: list[bytes], chunk: int
) -> None:
    limits = Limits(max_request_line=64, max_headers=4, max_header_bytes=200)
    protocol = HttpProtocol(app, ServerState(limits))
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    data = b"".join(requests)
    for at in range(0, len(data), chunk):
        if transport.closed:
            break
        protocol.data_received(data[at : at + chunk])
    protocol.check_deadlines(time.monotonic() + 3600)
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written)]
    assert all(s in (100, 200, 204) or 400 <= s < 500 for s in statuses), statuses
    assert transport.closed or not protocol.in_request or statuses


def test_a_bad_limit_is_refused_at_startup(
    model_tar: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODELDEPLOY_SERVE_MAX_CONNECTIONS", "lots")
    assert serve_main(model_tar, port=0) == 2
    assert "MODELDEPLOY_SERVE_MAX_CONNECTIONS must be a whole number, got 'lots'" in caplog.text
