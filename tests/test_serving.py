"""`modeldeploy serve`: the SageMaker XGBoost container contract over real HTTP, real xgboost.

Servers run as subprocesses (`python -m modeldeploy.serving`) on an ephemeral loopback port,
read from their startup line. Untrusted artifacts are refused through serve's own loading path.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xgboost

from modeldeploy.artifacts.package import MODEL_MEMBER, read_model_member, write_model_tar
from modeldeploy.cli import build_parser
from modeldeploy.serving import codecs, workers
from modeldeploy.serving.__main__ import main as serving_module_main
from modeldeploy.serving.model import ModelLoadError, load_model
from modeldeploy.serving.workers import serve_main
from modeldeploy.training.train import train

SMALL_LIMIT = 64 * 1024  # MAX_CONTENT_LENGTH of the shared server, so that 413 is cheap to hit


class Server:
    """A `python -m modeldeploy.serving` subprocess; its port comes from its startup line."""

    def __init__(self, model: Path, workers: int = 1, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "modeldeploy.serving", "--model", str(model)]
        command += ["--workers", str(workers)]
        if env is None or "SAGEMAKER_BIND_TO_PORT" not in env:
            command += ["--port", "0"]
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._started.wait(60) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", "".join(self.lines))
        assert match, self.lines
        self.port = int(match.group(1))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if " serving " in line:
                self._started.set()
        self._started.set()  # exited

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def invoke(
        self, body: bytes, content_type: str | None = "text/csv", accept: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return self.request("POST", "/invocations", body, headers)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("model")
    result = train(out, progress=False)
    rows = np.loadtxt(result.heldout, delimiter=",")
    X = rows[:, 1:]
    booster = xgboost.Booster()
    booster.load_model(bytearray(read_model_member(result.model_tar)))
    # The reference: in-process Booster.predict on the same rows.
    expected = booster.predict(xgboost.DMatrix(X))
    lines = result.heldout.read_text().splitlines()
    csv_lines = [line.split(",", 1)[1] for line in lines]
    return {
        "tar": result.model_tar,
        "X": X,
        "y": rows[:, 0],
        "expected": expected,
        "booster": booster,
        "csv_lines": csv_lines,
        "csv": ("\n".join(csv_lines) + "\n").encode(),
    }


@pytest.fixture(scope="module")
def server(trained: dict) -> Iterator[Server]:
    srv = Server(trained["tar"], env={"MAX_CONTENT_LENGTH": str(SMALL_LIMIT)})
    yield srv
    assert srv.stop() == 0


def _csv_scores(body: bytes) -> np.ndarray:
    return np.array([float(v) for v in body.decode().splitlines()])


# --- the contract ------------------------------------------------------------------------


def test_ping(server: Server) -> None:
    status, _, _ = server.request("GET", "/ping")
    assert status == 200


def test_csv_predictions_equal_in_process_booster(server: Server, trained: dict) -> None:
    status, headers, body = server.invoke(trained["csv"])
    assert status == 200, body
    assert headers["Content-Type"] == "text/csv"
    got = _csv_scores(body)
    assert got.shape == trained["expected"].shape
    np.testing.assert_allclose(got, trained["expected"], rtol=0, atol=1e-6)


def test_one_row_with_charset(server: Server, trained: dict) -> None:
    status, _, body = server.invoke(trained["csv_lines"][3].encode(), "text/csv; charset=utf-8")
    assert status == 200, body
    assert abs(float(body) - trained["expected"][3]) <= 1e-6


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, "text/csv"),
        ("*/*", "text/csv"),
        ("text/csv", "text/csv"),
        ("application/json", "application/json"),
        ("application/jsonlines", "application/jsonlines"),
        ("application/xml, application/jsonlines;q=0.5, text/csv;q=0.2", "application/jsonlines"),
    ],
)
def test_accept(server: Server, trained: dict, accept: str | None, media: str) -> None:
    rows = "\n".join(trained["csv_lines"][:5]).encode()
    status, headers, body = server.invoke(rows, accept=accept)
    assert status == 200, body
    assert headers["Content-Type"] == media
    if media == "text/csv":
        got = _csv_scores(body)
    elif media == "application/json":
        got = np.array([p["score"] for p in json.loads(body)["predictions"]])
    else:
        got = np.array([json.loads(line)["score"] for line in body.decode().splitlines()])
    np.testing.assert_allclose(got, trained["expected"][:5], rtol=0, atol=1e-6)


def test_libsvm(server: Server, trained: dict) -> None:
    X = trained["X"][:20].copy()
    X[0, [2, 5]] = np.nan  # absent indices are missing values
    lines = []
    for label, row in zip(trained["y"][:20], X, strict=True):
        pairs = " ".join(f"{i}:{float(v)!r}" for i, v in enumerate(row) if not np.isnan(v))
        lines.append(f"{int(label)} {pairs}")
    expected = trained["booster"].predict(xgboost.DMatrix(X))
    for content_type in ("text/libsvm", "text/x-libsvm"):
        status, _, body = server.invoke("\n".join(lines).encode(), content_type)
        assert status == 200, body
        np.testing.assert_allclose(_csv_scores(body), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("body", [b"", b"\n"])
def test_empty_body_is_204(server: Server, body: bytes) -> None:
    status, _, payload = server.invoke(body)
    assert (status, payload) == (204, b"")


@pytest.mark.parametrize(
    "body",
    [
        b"a,b,c",
        b"1.0,2.0,abc",
        b"1,2,3\n4,5\n",  # ragged rows
        b"{not csv}",
    ],
)
def test_malformed_csv_is_415(server: Server, body: bytes) -> None:
    status, _, payload = server.invoke(body)
    assert status == 415, payload
    assert b"unparseable CSV" in payload


def test_malformed_libsvm_is_415(server: Server) -> None:
    status, _, payload = server.invoke(b"1 0:1.5 2:x", "text/libsvm")
    assert status == 415, payload


@pytest.mark.parametrize(("columns", "content_type"), [(29, "text/csv"), (31, "text/csv")])
def test_wrong_feature_count_is_400_naming_both(
    server: Server, trained: dict, columns: int, content_type: str
) -> None:
    row = ",".join(["1.5"] * columns).encode()
    status, _, payload = server.invoke(row, content_type)
    assert status == 400, payload
    assert f"have {columns} features".encode() in payload
    assert b"expects 30" in payload


def test_libsvm_index_out_of_range_is_400(server: Server) -> None:
    status, _, payload = server.invoke(b"0 1:0.5 30:2.0", "text/libsvm")
    assert status == 400, payload
    assert b"index 30" in payload and b"30 features" in payload


def test_unsupported_accept_is_406(server: Server, trained: dict) -> None:
    status, _, payload = server.invoke(trained["csv_lines"][0].encode(), accept="application/xml")
    assert status == 406, payload


def test_unsupported_content_type_is_415(server: Server, trained: dict) -> None:
    status, _, payload = server.invoke(b'{"instances": [[1, 2]]}', "application/json")
    assert status == 415, payload
    assert b"application/json" in payload


def test_oversize_body_is_413(server: Server) -> None:
    row = b"1.5," * 29 + b"1.5\n"
    body = row * (SMALL_LIMIT // len(row) + 1)
    assert len(body) > SMALL_LIMIT
    status, _, payload = server.invoke(body)
    assert status == 413, payload
    assert str(SMALL_LIMIT).encode() in payload


def test_oversize_chunked_body_is_413(server: Server) -> None:
    """No Content-Length up front: the limit applies as the chunks arrive."""
    chunk = (b"1.5," * 29 + b"1.5\n") * 100
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/invocations",
            body=iter([chunk] * (SMALL_LIMIT // len(chunk) + 2)),
            headers={"Content-Type": "text/csv"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()


def test_expect_100_continue_and_keep_alive(server: Server, trained: dict) -> None:
    """curl sends `Expect: 100-continue` for bodies over 1 KiB; two requests on one connection."""
    body = trained["csv"][:2000].rsplit(b"\n", 1)[0]
    rows = body.count(b"\n") + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = (
            "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        reader = sock.makefile("rb")
        for attempt in range(2):
            status, payload = _read_response(reader)
            assert status == 200, payload
            np.testing.assert_allclose(
                _csv_scores(payload), trained["expected"][:rows], rtol=0, atol=1e-6
            )
            if attempt == 0:
                sock.sendall(head.replace(b"Expect: 100-continue\r\n", b"") + body)


def _read_response(reader: io.BufferedReader) -> tuple[int, bytes]:
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, reader.read(length)


def test_unknown_path_and_method(server: Server) -> None:
    assert server.request("GET", "/nope")[0] == 404
    assert server.request("GET", "/invocations")[0] == 405
    status, _, body = server.request("GET", "/execution-parameters")
    assert status == 200 and json.loads(body)["BatchStrategy"] == "MULTI_RECORD"


def test_concurrent_requests_all_correct(server: Server, trained: dict) -> None:
    lines, expected = trained["csv_lines"], trained["expected"]
    failures: list[str] = []

    def client(offset: int) -> None:
        for i in range(20):
            start = (offset * 7 + i * 3) % (len(lines) - 10)
            count = 1 + (i % 10)
            body = "\n".join(lines[start : start + count]).encode()
            status, _, payload = server.invoke(body, accept="application/json")
            scores = [p["score"] for p in json.loads(payload)["predictions"]]
            want = expected[start : start + count]
            if status != 200 or not np.allclose(scores, want, rtol=0, atol=1e-6):
                failures.append(f"client {offset} request {i}: {status} {payload[:80]!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


# --- process model -------------------------------------------------------------------------


def test_two_workers_answer_and_stop_cleanly(trained: dict) -> None:
    srv = Server(trained["tar"], workers=2)
    try:
        assert srv.request("GET", "/ping")[0] == 200
        status, _, body = srv.invoke(trained["csv"])
        assert status == 200
        np.testing.assert_allclose(_csv_scores(body), trained["expected"], rtol=0, atol=1e-6)
        # Several connections at once, so that both workers take some.
        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(srv.invoke(trained["csv_lines"][0].encode())[0])
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 8
        workers = _children(srv.proc.pid)
        assert len(workers) == 2
        # A worker that dies is replaced; the other keeps serving meanwhile.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _children(srv.proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2 and workers[0] not in now, now
        assert srv.invoke(trained["csv_lines"][0].encode())[0] == 200
        workers = now
    finally:
        code = srv.stop()
    assert code == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_port_from_env_and_sigterm(trained: dict, tmp_path: Path) -> None:
    """No --port: SAGEMAKER_BIND_TO_PORT decides (0 here, so the kernel picks a free one)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / MODEL_MEMBER).write_bytes(read_model_member(trained["tar"]))
    srv = Server(model_dir, env={"SAGEMAKER_BIND_TO_PORT": "0"})
    try:
        status, _, body = srv.invoke(trained["csv_lines"][0].encode())
        assert status == 200
        assert abs(float(body) - trained["expected"][0]) <= 1e-6
    finally:
        started = time.monotonic()
        assert srv.stop() == 0
    assert time.monotonic() - started < 5  # SIGTERM stops it promptly


def test_both_entry_points_take_the_same_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`modeldeploy serve` and `python -m modeldeploy.serving` parse alike (one declaration)."""
    calls: list[tuple[tuple, dict]] = []

    def record(*args: object, **kwargs: object) -> int:
        calls.append((args, kwargs))
        return 0

    monkeypatch.setattr(workers, "serve_main", record)
    model = tmp_path / "model.tar.gz"
    for argv in ([], ["--port", "9", "--host", "0.0.0.0", "--workers", "3"]):
        assert serving_module_main(["--model", str(model), *argv]) == 0
        args = build_parser().parse_args(["serve", "--model", str(model), *argv])
        assert args.func(args) == 0
        assert calls[-1] == calls[-2], argv
    assert calls[0] == ((model,), {"port": None, "host": "127.0.0.1", "workers": 1})


# --- model loading and untrusted artifacts --------------------------------------------------


def test_model_from_tar_file_or_directory(trained: dict, tmp_path: Path) -> None:
    raw = read_model_member(trained["tar"])
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / MODEL_MEMBER).write_bytes(raw)
    (tmp_path / "file.ubj").write_bytes(raw)
    X = trained["X"][:10]
    for path in (trained["tar"], tmp_path / "dir", tmp_path / "file.ubj"):
        model = load_model(path)
        assert model.num_feature == 30
        np.testing.assert_allclose(model.predict(X), trained["expected"][:10], atol=1e-6)
    # Strided or integer rows are made contiguous floats before the direct C call.
    wide = np.repeat(trained["X"][:10], 2, axis=1)[:, ::2]
    np.testing.assert_allclose(model.predict(wide), trained["expected"][:10], atol=1e-6)


def _tar_with(tmp_path: Path, name: str, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / f"{name}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info


def _unsafe_artifacts(tmp_path: Path, model: bytes) -> dict[str, tuple[Path, str]]:
    store = tmp_path / "store"
    store.mkdir()
    return {
        "dotdot": (
            _tar_with(store, "dotdot", _member("../escaped", size=len(model)), model),
            "escapes the archive",
        ),
        "absolute": (
            _tar_with(store, "absolute", _member(str(tmp_path / "abs"), size=len(model)), model),
            "absolute path",
        ),
        "symlink": (
            _tar_with(store, "symlink", _member(MODEL_MEMBER, tarfile.SYMTYPE, link="/etc/passwd")),
            "links are refused",
        ),
        "device": (
            _tar_with(store, "device", _member(MODEL_MEMBER, tarfile.CHRTYPE)),
            "not a regular file",
        ),
    }


def test_untrusted_tars_are_refused_at_startup(
    trained: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """serve_main returns 2 with the reason, before listening, and writes nothing anywhere."""
    model = read_model_member(trained["tar"])
    artifacts = _unsafe_artifacts(tmp_path, model)
    before = sorted(p for p in tmp_path.rglob("*"))
    for name, (path, reason) in artifacts.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert serve_main(path, port=0) == 2, name
        assert reason in caplog.text, (name, caplog.text)
        assert "cannot serve the model" in caplog.text
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "abs").exists()


def test_pickled_model_is_refused(
    trained: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pickle never reaches pickle.load: refused as not xgboost-native, in a tar or bare."""
    pickled = tmp_path / MODEL_MEMBER
    pickled.write_bytes(pickle.dumps(trained["booster"]))
    tar = tmp_path / "model.tar.gz"
    write_model_tar(pickled, tar)
    for path in (tar, pickled):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert serve_main(path, port=0) == 2
        assert "pickled models are refused" in caplog.text, caplog.text


def test_missing_model_and_garbage_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.tar.gz")
    with pytest.raises(ModelLoadError, match="neither"):
        load_model(tmp_path)
    (tmp_path / "junk").write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ModelLoadError, match="not an xgboost native model"):
        load_model(tmp_path / "junk")


# --- codecs (no server) ---------------------------------------------------------------------


def test_csv_parse_is_exact(trained: dict) -> None:
    """The fast path reads every field exactly as Python's float() does."""
    X = codecs.parse_csv(trained["csv"], 30)
    want = np.array([[float(v) for v in line.split(",")] for line in trained["csv_lines"]])
    assert np.array_equal(X, want)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 4)) * 10.0 ** rng.integers(-8, 8, size=(50, 4))
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in values).encode()
    assert np.array_equal(codecs.parse_csv(text, 4), values)


def test_csv_slow_path_spellings() -> None:
    got = codecs.parse_csv(b"1,,.5,+2\r\nnan, 3 ,5.,-inf\n", 4)
    want = np.array([[1, np.nan, 0.5, 2], [np.nan, 3, 5, -np.inf]])
    assert np.array_equal(got, want, equal_nan=True)
    with pytest.raises(codecs.RequestError) as err:
        codecs.parse_csv(b"1,true", 2)
    assert err.value.status == 415
    with pytest.raises(codecs.RequestError) as err:
        codecs.parse_csv(b"1,[2]", 2)
    assert err.value.status == 415
    with pytest.raises(codecs.RequestError) as err:
        codecs.parse_csv(b"1," + b"9" * 500, 2)  # a field too long for the vectorized path
    assert err.value.status == 415


def test_encode_formats() -> None:
    scores = np.array([0.25, 0.5], dtype=np.float32)
    assert codecs.encode(scores, codecs.CSV) == b"0.25\n0.5\n"
    assert json.loads(codecs.encode(scores, codecs.JSON)) == {
        "predictions": [{"score": 0.25}, {"score": 0.5}]
    }
    assert codecs.encode(scores, codecs.JSONLINES) == b'{"score":0.25}\n{"score":0.5}\n'
    multi = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    assert codecs.encode(multi, codecs.CSV) == b"0.25,0.75\n0.5,0.5\n"
    assert json.loads(codecs.encode(multi, codecs.JSON))["predictions"][0] == {
        "score": [0.25, 0.75]
    }
    assert codecs.encode(np.array([np.nan], dtype=np.float32), codecs.CSV) == b"nan\n"


def test_accept_negotiation() -> None:
    assert codecs.response_type(None) == codecs.CSV
    assert codecs.response_type(b"application/*") == codecs.JSON
    assert codecs.response_type(b"text/csv;q=0.1, application/json") == codecs.JSON
    with pytest.raises(codecs.RequestError) as err:
        codecs.response_type(b"application/json;q=0")
    assert err.value.status == 406
    assert codecs.request_type(None) == codecs.CSV  # as the container defaults
    assert codecs.request_type(b"Text/CSV; charset=utf-8") == codecs.CSV


def test_multiclass_model_serves_probability_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = rng.integers(0, 3, size=60)
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgboost.DMatrix(X, label=y),
        num_boost_round=3,
    )
    path = tmp_path / MODEL_MEMBER
    path.write_bytes(bytes(booster.save_raw("ubj")))
    model = load_model(path)
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in X).encode()
    got = model.predict(codecs.parse_csv(text, 4))
    want = booster.predict(xgboost.DMatrix(X))
    assert got.shape == (60, 3)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_max_content_length_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldeploy.serving import server

    monkeypatch.delenv("MAX_CONTENT_LENGTH", raising=False)
    assert server.max_content_length() == 6 * 1024 * 1024
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "1234")
    assert server.max_content_length() == 1234
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "0")
    with pytest.raises(ValueError):
        server.max_content_length()
