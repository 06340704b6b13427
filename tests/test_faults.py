"""Faults and the messages they leave: an API server outage under a running operator, the
control plane's port across restarts, private local state, and reasons a person can act on."""

from __future__ import annotations

import http.server
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local.hosting_process import ProcessHosting, post_invocation
from modeldeploy.providers.local.state import State
from modeldeploy.remote import Endpoint, EndpointStatus

XGBOOST_DEATH = """\
[08:01:02] WARNING: loading the model
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/xgboost/core.py", line 284, in _check_call
    raise XGBoostError(py_str(_LIB.XGBGetLastError()))
xgboost.core.XGBoostError: [08:01:02] /workspace/src/common/io.h:62: Invalid model format: \
expected a binary header
Stack trace:
  [bt] (0) /venv/lib/python3.11/site-packages/xgboost/lib/libxgboost.so(+0x2a6acc) [0x7f]
  [bt] (5) /venv/lib/python3.11/site-packages/xgboost/lib/libxgboost.so(XGBoosterLoadModel)
  [bt] (6) /lib/x86_64-linux-gnu/libffi.so.8(+0x7e2e) [0x7f]


"""


def test_a_server_that_dies_at_start_reports_why_not_its_backtrace(tmp_path: Path) -> None:
    hosting = ProcessHosting(State(tmp_path / "registry.db"), tmp_path)
    hosting._log("ep", "cfg").write_text(XGBOOST_DEATH)
    why = hosting._tail("ep", "cfg")
    assert why.startswith("xgboost.core.XGBoostError:"), why
    assert "Invalid model format" in why and "[bt]" not in why
    hosting._log("ep", "quiet").write_text("\n\n")
    assert hosting._tail("ep", "quiet") == "no output"
    hosting._log("ep", "plain").write_text("serving on 8080\nport 8080 in use, giving up\n\n")
    assert hosting._tail("ep", "plain") == "port 8080 in use, giving up"


@pytest.fixture
def answers_500() -> Iterator[str]:
    """A loopback endpoint whose every answer is a 500 with a multi-line body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"\nmodel error: feature_names mismatch: expected 30, got 2\ndetail\n"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/invocations"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_smoke_test_hitting_a_500_names_the_first_line_of_the_answer(answers_500: str) -> None:
    endpoint = Endpoint("ep", EndpointStatus.IN_SERVICE, "cfg", url=answers_500)
    with pytest.raises(TerminalError) as err:
        post_invocation(endpoint, "ep", "1,2", "text/csv")
    assert str(err.value) == "HTTP 500: model error: feature_names mismatch: expected 30, got 2"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
