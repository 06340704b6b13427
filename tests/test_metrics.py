"""Prometheus metrics (modeldeploy/metrics.py, modeldeploy/serving/metrics.py): `modeldeploy
serve`'s /metrics in a real server process with several workers, the operator's metrics as a
real pipeline moves (the local provider through the kopf handlers), the botocore hooks against
a real HTTP server that throttles, the operator's own /metrics endpoint, and the Grafana
dashboard, whose every query must name a metric that the operator or serve really exports.

The end-to-end scrape of the operator process is in tests/test_e2e.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import kopf
import pytest
from botocore.config import Config
from driver import Resource
from operator_process import Samples, free_port, parse_metrics
from prometheus_client import generate_latest
from test_serving import Server

from modeldeploy import handlers, metrics
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.serving import metrics as serve_metrics
from modeldeploy.training.train import train

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "helm" / "modeldeploy" / "dashboards").glob("*.json"))
SMALL_LIMIT = 4096  # serve's MAX_CONTENT_LENGTH here, so that a 413 is cheap


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def operator_samples() -> Samples:
    return parse_metrics(generate_latest(metrics.REGISTRY).decode())


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# -- modeldeploy serve ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return train(tmp_path_factory.mktemp("model"), progress=False)


@pytest.fixture(scope="module")
def rows(model) -> bytes:
    lines = model.heldout.read_text().splitlines()[:3]
    return ("\n".join(line.split(",", 1)[1] for line in lines) + "\n").encode()


class Client:
    """One keep-alive connection to a server (so to one worker)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "text/csv"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def scrape(self) -> Samples:
        status, body = self.send("GET", "/metrics")
        assert status == 200
        return parse_metrics(body.decode())


@pytest.fixture(scope="module")
def served(model, rows: bytes) -> Iterator[tuple[Server, Samples]]:
    """Two workers, each holding one keep-alive client (the busier worker leaves a new
    connection to the idle one), and what /metrics said after a known mix of requests."""
    server = Server(model.model_tar, workers=2, env={"MAX_CONTENT_LENGTH": str(SMALL_LIMIT)})
    try:
        first = Client(server.port)
        assert first.send("GET", "/ping")[0] == 200
        second = Client(server.port)
        for client in (first, second):
            for _ in range(3):
                assert client.send("POST", "/invocations", rows)[0] == 200
        assert second.send("POST", "/invocations", b"1,2\n")[0] == 400  # 2 features, not 30
        assert second.send("POST", "/invocations", b"a,b,c\n")[0] == 415
        assert first.send("GET", "/nowhere")[0] == 404
        status, _ = Client(server.port).send("POST", "/invocations", rows * 10)
        assert status == 413
        # Each worker answers /metrics for both, and scraping counts nothing.
        scrapes = [client.scrape() for client in (first, second, first, second)]
        for other in scrapes[1:]:
            assert other == scrapes[0], "the workers disagree"
        yield server, scrapes[0]
    finally:
        server.stop()


def test_serve_counts_requests_rows_and_errors_by_status(served) -> None:
    _, samples = served
    requests = "modeldeploy_serve_requests_total"
    assert value(samples, requests, route="invocations", status="200") == 6
    assert value(samples, requests, route="invocations", status="400") == 1
    assert value(samples, requests, route="invocations", status="415") == 1
    assert value(samples, requests, route="invocations", status="413") == 1
    assert value(samples, requests, route="ping", status="200") == 1
    assert value(samples, requests, route="other", status="404") == 1
    # Four scrapes and eleven requests: /metrics counts nothing, not even as a route "other".
    assert sum(v for (n, _), v in samples.items() if n == requests) == 11
    assert value(samples, "modeldeploy_serve_rows_total") == 6 * 3
    errors = "modeldeploy_serve_errors_total"
    assert {dict(labels)["status"]: v for (n, labels), v in samples.items() if n == errors} == {
        "400": 1,
        "404": 1,
        "413": 1,
        "415": 1,
    }
    duration = "modeldeploy_serve_request_duration_seconds"
    assert value(samples, f"{duration}_count", route="invocations") == 9
    assert value(samples, f"{duration}_bucket", route="invocations", le="+Inf") == 9
    assert 0 < value(samples, f"{duration}_sum", route="invocations") < 9 * 5
    # Cumulative buckets that never decrease.
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == f"{duration}_bucket" and dict(labels)["route"] == "invocations"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)


def test_serve_metrics_move_and_survive_a_worker_restart(served, rows: bytes) -> None:
    server, before = served
    client = Client(server.port)
    assert client.send("POST", "/invocations", rows)[0] == 200
    after = client.scrape()
    requests = "modeldeploy_serve_requests_total"
    ok = {"route": "invocations", "status": "200"}
    assert value(after, requests, **ok) == value(before, requests, **ok) + 1
    assert value(after, "modeldeploy_serve_rows_total") == value(
        before, "modeldeploy_serve_rows_total"
    ) + rows.count(b"\n")

    # A worker that dies takes no count with it: its successor takes over its slot.
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    workers = [int(pid) for pid in children.read_text().split()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = [int(pid) for pid in children.read_text().split()]
        if len(now) == 2 and workers[0] not in now:
            break
        assert time.monotonic() < deadline, f"no worker replaced {workers[0]}: {now}"
        time.sleep(0.1)
    for _ in range(4):  # new connections, whichever worker answers
        again = Client(server.port).scrape()
        assert value(again, requests, **ok) == value(after, requests, **ok)


def test_one_board_sums_every_workers_slot() -> None:
    fd = serve_metrics.create_serve_board(3)
    try:
        slots = [serve_metrics.ServeMetrics(fd, slot) for slot in range(3)]
        start = time.perf_counter_ns()
        for slot, board in enumerate(slots):
            for _ in range(slot + 1):
                board.request(b"/invocations", 200, start)
            board.rows(10)
        slots[2].request(b"/metrics", 200, start)  # never counted
        slots[2].request(b"/invocations", 599, start)  # a status the server does not use
        for board in slots:
            samples = parse_metrics(board.exposition()[1].decode())
            requests = "modeldeploy_serve_requests_total"
            assert value(samples, requests, route="invocations", status="200") == 6
            assert value(samples, requests, route="invocations", status="other") == 1
            assert value(samples, "modeldeploy_serve_errors_total", status="other") == 1
            assert value(samples, "modeldeploy_serve_rows_total") == 30
        with pytest.raises(ValueError, match="slot 3"):
            serve_metrics.ServeMetrics(fd, 3)
    finally:
        os.close(fd)


# -- the operator ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Samples, Samples]]:
    """A local-provider ModelDeployment driven through the kopf handlers from nothing to
    Deployed (automatic approval and promotion, real servers, a real smoke test), then
    deleted: the operator's samples before, and once Deployed."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MODELDEPLOY_LOCAL_DIR", str(tmp_path_factory.mktemp("local")))
    factory = ProviderFactory(default="local")
    payload = model.heldout.read_text().splitlines()[0].split(",", 1)[1]
    res = Resource(
        {
            "provider": "local",
            "modelPackageGroup": {"name": "metrics-test"},
            "model": {"artifact": f"file://{model.model_tar}", "metrics": model.metrics},
            "approval": {"policy": "Automatic", "rules": [{"metric": "auc", "min": 0.5}]},
            "staging": {"smokeTest": {"payload": payload, "maxLatencyMs": 5000}},
            "production": {"promotion": "Automatic"},
        },
        providers=factory,
        name="scored",
        namespace="metrics",
    )
    before = operator_samples()
    try:
        deadline = time.monotonic() + 90
        while res.status.get("phase") != "Deployed":
            assert time.monotonic() < deadline, res.status.get("message")
            res.call(handlers.on_change)
            time.sleep(0.1)
        deployed = operator_samples()
        for _ in range(20):
            try:
                res.call(handlers.on_delete)
                break
            except kopf.TemporaryError:
                time.sleep(0.2)
        yield before, deployed
    finally:
        for provider in factory.built():
            for name in provider.hosting.names(""):
                provider.hosting.delete(name)
        mp.undo()


def test_a_pipeline_moves_the_operator_metrics(pipeline) -> None:
    before, deployed = pipeline

    def moved(metric: str, /, **labels: str) -> float:
        return value(deployed, metric, **labels) - value(before, metric, **labels)

    assert moved("modeldeploy_reconcile_total", result="ok") >= 5
    assert moved("modeldeploy_reconcile_duration_seconds_count", result="ok") >= 5
    actions = "modeldeploy_actions_total"
    for action in ("EnsureGroup", "RegisterVersion", "SetApproval", "SmokeTest"):
        assert moved(actions, action=action, outcome="ok") == 1, action
    assert moved(actions, action="DeployEndpoint", outcome="ok") == 2  # staging, production
    calls = "modeldeploy_remote_calls_total"
    assert moved(calls, provider="local", operation="register_version", result="ok") == 1
    assert moved(calls, provider="local", operation="deploy", result="ok") == 2
    # The smoke test: once, again only when the answer came too slowly (a cold start).
    assert 1 <= moved(calls, provider="local", operation="invoke", result="ok") <= 3
    assert moved(calls, provider="local", operation="describe", result="ok") >= 2
    assert moved("modeldeploy_smoke_tests_total", provider="local", result="passed") == 1
    latency = "modeldeploy_smoke_test_latency_seconds"
    assert moved(f"{latency}_count", provider="local") == 1
    assert 0 < moved(f"{latency}_sum", provider="local") < 5

    who = {"namespace": "metrics", "name": "scored"}
    phase = "modeldeploy_resource_phase"
    assert value(deployed, phase, **who, phase="Deployed") == 1
    assert value(deployed, phase, **who, phase="Promoting") == 0
    condition = "modeldeploy_resource_condition"
    assert value(deployed, condition, **who, condition="Ready", status="True") == 1
    assert value(deployed, condition, **who, condition="Ready", status="False") == 0
    assert value(deployed, condition, **who, condition="Stalled", status="False") == 1


def test_a_deleted_resource_leaves_no_series(pipeline) -> None:
    now = operator_samples()
    assert not [key for key in now if ("name", "scored") in key[1]]


def test_an_invalid_spec_is_a_stalled_pass() -> None:
    res = Resource(
        {"modelPackageGroup": {"name": "g"}, "approval": {"policy": "Automatic"}},
        providers=ProviderFactory(default="local"),
        name="broken",
        namespace="metrics",
    )
    before = operator_samples()
    res.call(handlers.on_change)
    after = operator_samples()
    stalled = "modeldeploy_reconcile_total"
    assert value(after, stalled, result="stalled") == value(before, stalled, result="stalled") + 1
    who = {"namespace": "metrics", "name": "broken"}
    assert value(after, "modeldeploy_resource_phase", **who, phase="Failed") == 1
    condition = "modeldeploy_resource_condition"
    assert value(after, condition, **who, condition="Stalled", status="True") == 1
    metrics.forget_resource(res.raw)
    assert not [key for key in operator_samples() if ("name", "broken") in key[1]]


def test_resource_series_follow_the_status_they_were_set_from() -> None:
    """A condition the status no longer has loses its series; a pass that wrote no phase or
    conditions (a first transient error) keeps the last ones."""
    who = {"namespace": "metrics", "name": "moving"}
    key = ("name", "moving")
    conditions = [{"type": "Ready", "status": "False"}, {"type": "Degraded", "status": "True"}]
    metrics.set_resource(
        "metrics", "moving", {"phase": "DeployingStaging", "conditions": conditions}
    )
    metrics.set_resource("metrics", "moving", {})
    now = operator_samples()
    assert value(now, "modeldeploy_resource_phase", **who, phase="DeployingStaging") == 1
    assert (
        value(now, "modeldeploy_resource_condition", **who, condition="Degraded", status="True")
        == 1
    )

    ready = [{"type": "Ready", "status": "True"}]
    metrics.set_resource("metrics", "moving", {"phase": "Deployed", "conditions": ready})
    now = operator_samples()
    assert value(now, "modeldeploy_resource_phase", **who, phase="Deployed") == 1
    assert value(now, "modeldeploy_resource_phase", **who, phase="DeployingStaging") == 0
    assert (
        value(now, "modeldeploy_resource_condition", **who, condition="Ready", status="True") == 1
    )
    assert not [k for k in now if key in k[1] and ("condition", "Degraded") in k[1]]
    metrics.forget_resource({"metadata": {"namespace": "metrics", "name": "moving"}})
    assert not [k for k in operator_samples() if key in k[1]]


class _Throttler(BaseHTTPRequestHandler):
    """A SageMaker API (JSON protocol) that throttles DescribeEndpoint, refuses
    DescribeModel, and lists no endpoints."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        answers = {
            "ListEndpoints": (200, {"Endpoints": []}),
            "DescribeEndpoint": (400, {"__type": "ThrottlingException", "message": "slow"}),
            "DescribeModel": (400, {"__type": "ValidationException", "message": "no"}),
        }
        status, body = answers.get(operation, (500, {"__type": "InternalFailure"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def aws_calls() -> Iterator[tuple[Samples, Samples]]:
    """Calls of a sagemaker provider's own clients against a throttling server, and one
    against a closed port: the operator's samples before and after."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NO_PROXY", "127.0.0.1")  # botocore honours proxies; loopback needs none
    mp.delenv("AWS_MAX_ATTEMPTS", raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Throttler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    config = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=2)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    sm = session.client("sagemaker", endpoint_url=url, config=config)
    runtime = session.client("sagemaker-runtime", endpoint_url=url, config=config)
    nowhere = f"http://127.0.0.1:{free_port()}"
    once = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
    s3 = session.client("s3", endpoint_url=nowhere, config=once)
    before = operator_samples()
    try:
        SageMakerProvider("us-east-1", sagemaker_client=sm, runtime_client=runtime, s3_client=s3)
        # A second provider over the same clients must not count their calls twice.
        SageMakerProvider("us-east-1", sagemaker_client=sm, runtime_client=runtime, s3_client=s3)
        sm.list_endpoints()
        for call in (
            lambda: sm.describe_endpoint(EndpointName="e"),
            lambda: sm.describe_model(ModelName="m"),
            lambda: s3.get_object(Bucket="b", Key="k"),
        ):
            with pytest.raises(Exception):  # noqa: B017 - each fails its own botocore way
                call()
        yield before, operator_samples()
    finally:
        mp.undo()
        httpd.shutdown()
        httpd.server_close()


def test_aws_calls_are_counted_by_result_from_botocore_hooks(aws_calls) -> None:
    before, after = aws_calls

    def moved(metric: str, /, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    calls = "modeldeploy_remote_calls_total"
    sm = {"provider": "sagemaker"}
    assert moved(calls, **sm, operation="ListEndpoints", result="ok") == 1
    assert moved(calls, **sm, operation="DescribeEndpoint", result="throttled") == 1
    assert moved(calls, **sm, operation="DescribeModel", result="failed") == 1
    assert moved(calls, **sm, operation="GetObject", result="failed") == 1  # no answer at all
    throttled = "modeldeploy_remote_throttled_attempts_total"
    assert moved(throttled, **sm, operation="DescribeEndpoint") == 2  # first try and the retry
    assert moved(throttled, **sm, operation="DescribeModel") == 0


def test_the_operator_serves_its_metrics_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics.stop_server()
    monkeypatch.delenv(metrics.PORT_ENV, raising=False)
    assert metrics.serve_from_env() is None  # off by hand unless asked
    monkeypatch.setenv(metrics.PORT_ENV, "http")
    with pytest.raises(kopf.PermanentError, match="MODELDEPLOY_METRICS_PORT"):
        metrics.serve_from_env()
    port = free_port()
    monkeypatch.setenv(metrics.PORT_ENV, str(port))
    monkeypatch.setenv(metrics.ADDRESS_ENV, "127.0.0.1")
    try:
        assert metrics.serve_from_env() == port
        assert metrics.serve_from_env() == port  # a second startup keeps the server
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "# TYPE modeldeploy_reconcile_total counter" in text
        assert "# TYPE modeldeploy_reconcile_duration_seconds histogram" in text
        assert "process_cpu_seconds_total" in text
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            metrics.stop_server()
            monkeypatch.setenv(metrics.PORT_ENV, str(taken.getsockname()[1]))
            with pytest.raises(kopf.PermanentError, match="cannot serve metrics"):
                metrics.serve_from_env()
    finally:
        metrics.stop_server()


# -- the dashboard --------------------------------------------------------------------------------

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither functions,
    keywords, label names (inside {...} or by/without/on/ignoring lists), nor in strings,
    ranges or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    found = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        word = match.group()
        if word.lower() in PROMQL_KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue
        found.add(word)
    return found


def test_the_promql_parser_finds_metric_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{route="a b",le!="1"}'
        "[$__rate_interval]))) / on (route) group_left sum(y_total) * 1e3 > bool 0"
    )
    assert promql_metric_names(expr) == {"x_bucket", "y_total"}
    assert promql_metric_names("sum(rate(a_total[5m])) by (status) or vector(0)") == {"a_total"}


def dashboard_queries(dashboard: dict) -> list[str]:
    queries = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            queries.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query.get("query", "") if isinstance(query, dict) else query
            found = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            queries.append(found.group(1) if found else text)
    return queries


def test_the_dashboard_names_only_metrics_that_are_exported(pipeline, aws_calls, served) -> None:
    """Every metric named in the dashboard's queries is among the samples the operator's
    registry and serve's /metrics hold after the pipeline, the AWS calls and the requests above
    (which exercise every metric); and every modeldeploy metric is on the dashboard."""
    exported = names(pipeline[1]) | names(aws_calls[1]) | names(served[1])
    assert DASHBOARDS, "no dashboard under helm/modeldeploy/dashboards/"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        queries = dashboard_queries(dashboard)
        assert queries, f"{path.name} has no query"
        used = set()
        for query in queries:
            found = promql_metric_names(query)
            assert found, f"{path.name}: no metric in {query!r}"
            assert found <= exported, f"{path.name}: {sorted(found - exported)} in {query!r}"
            used |= found
        families = {
            re.sub(r"_(total|bucket|count|sum|created)$", "", name)
            for name in exported
            if name.startswith("modeldeploy_") and not name.endswith("_created")
        }
        shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
        assert families <= shown, f"{path.name} leaves out {sorted(families - shown)}"
