"""A fault-injecting HTTP proxy between the operator's boto3 clients and the AWS emulator, and
a batch of ModelDeployments driven through it (tests/test_fault_proxy.py, bench/faults.py).

For a fraction of requests (a seeded RNG: the same requests in the same order meet the same
faults) the proxy injects one fault: AWS throttling, a 500 or 503, a delay past the client's
read timeout, or a dropped connection. Faults other than throttling come either before
forwarding (the emulator never sees the request) or after it (the emulator did the work and
the client never hears so), which is what tests that mutating calls are idempotent.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

KINDS = ("throttle", "error500", "error503", "timeout", "drop")
# Not forwarded either way: hop-by-hop headers, and lengths this proxy sets itself.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length"}
)
# (status, AWS error code, message) of the injected error answers.
_ERRORS = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "error500": (500, "InternalFailure", "injected internal failure"),
    "error503": (503, "ServiceUnavailable", "injected unavailability"),
}


@dataclass(frozen=True)
class Fault:
    kind: str  # one of KINDS
    when: str  # "before" forwarding (nothing happened) or "after" (the answer is lost)

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.when}"


@dataclass
class Tally:
    requests: int = 0
    forwarded: int = 0  # reached the emulator
    faults: Counter[str] = field(default_factory=Counter)  # "drop-after": 3
    by_operation: dict[str, Counter[str]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)  # requests per operation

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "forwarded": self.forwarded,
            "faults": sum(self.faults.values()),
            "faults_by_kind": dict(sorted(self.faults.items())),
            "faults_by_operation": {
                op: dict(sorted(c.items())) for op, c in sorted(self.by_operation.items())
            },
            "requests_by_operation": dict(sorted(self.calls.items())),
        }


def operation(command: str, path: str, target: str | None) -> str:
    """The AWS operation of a request: X-Amz-Target for SageMaker's JSON protocol; the
    runtime's and S3's REST calls have none."""
    if target:
        return target.rsplit(".", 1)[-1]
    if path.startswith("/endpoints/") and "/invocations" in path:
        return "InvokeEndpoint"
    return f"S3 {command}"


class FaultProxy:
    """Forwards to `upstream`, injecting a fault into about `rate` of the requests."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.2,
        seed: int = 11,
        delay: float = 2.5,
        kinds: tuple[str, ...] = KINDS,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate, self.delay, self.kinds = rate, delay, kinds
        self.tally = Tally()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._forced: dict[str, list[Fault]] = {}
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes requests held for a timeout
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def force(self, op: str, kind: str, when: str, times: int = 1) -> None:
        """Inject this fault into the next `times` requests of `op`, whatever the rate."""
        with self._lock:
            self._forced.setdefault(op, []).extend([Fault(kind, when)] * times)

    def pick(self, op: str) -> Fault | None:
        with self._lock:
            self.tally.requests += 1
            self.tally.calls[op] += 1
            forced = self._forced.get(op)
            if forced:
                fault: Fault | None = forced.pop(0)
            elif self._rng.random() < self.rate:
                kind = self._rng.choice(self.kinds)
                # Throttling means refused: it never comes after the work was done.
                when = "before" if kind == "throttle" else self._rng.choice(("before", "after"))
                fault = Fault(kind, when)
            else:
                fault = None
            if fault is not None:
                self.tally.faults[fault.label] += 1
                self.tally.by_operation.setdefault(op, Counter())[fault.label] += 1
            return fault

    def forward(
        self, command: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            sent = [(k, v) for k, v in headers if k.lower() not in _HOP]
            conn.putrequest(command, path, skip_host=True, skip_accept_encoding=True)
            for key, value in [*sent, ("Content-Length", str(len(body)))]:
                conn.putheader(key, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            with self._lock:
                self.tally.forwarded += 1
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def hold(self) -> None:
        """Keep a request unanswered past the client's read timeout (or until stop)."""
        self._stopping.wait(self.delay)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (its read timeout) or a connection this proxy cut: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    protocol_version = "HTTP/1.1"  # botocore keeps connections alive
    # Headers and body leave in two sends: with Nagle's algorithm and the client's delayed ACK
    # every answer waited ~40 ms (0.13 s per serial pipeline through the proxy against 0.013 s
    # direct). socketserver sets TCP_NODELAY on each connection with this.
    disable_nagle_algorithm = True

    def log_message(self, *_: object) -> None:  # the tally says what happened
        pass

    def _body(self) -> bytes | None:
        """The request's body; None when the client went away before sending all of it."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        expected = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(expected)
        return body if len(body) == expected else None

    def _relay(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        if body is None:  # a killed client's half request: no server would act on it
            self.close_connection = True
            return
        target = self.headers.get("X-Amz-Target")
        fault = proxy.pick(operation(self.command, self.path, target))
        if fault is None or fault.when == "after":
            answer = proxy.forward(self.command, self.path, list(self.headers.items()), body)
        if fault is None:
            self._answer(*answer)
        elif fault.kind in _ERRORS:
            self._error(fault.kind, xml=target is None and not self.path.startswith("/endpoints/"))
        else:
            if fault.kind == "timeout":
                proxy.hold()
            self._drop()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)
        for key, value in headers:
            if key.lower() not in _HOP:
                self.send_header(key, value)
        # A HEAD answer keeps the length a GET would have, and has no body.
        head = self.command == "HEAD"
        length = str(len(data))
        if head:
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
        self.send_header("Content-Length", length)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, kind: str, *, xml: bool) -> None:
        status, code, message = _ERRORS[kind]
        if xml:  # S3 speaks XML, and throttles with 503 SlowDown
            if kind == "throttle":
                status, code = 503, "SlowDown"
            data = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
            ctype = "application/xml"
        else:  # SageMaker's JSON error shape (the runtime's REST-JSON reads it too)
            data = json.dumps({"__type": code, "message": message}).encode()
            ctype = "application/x-amz-json-1.1"
        headers = [("Content-Type", ctype), ("x-amzn-ErrorType", code)]
        self._answer(status, headers, data)

    def _drop(self) -> None:
        """Close without a word: a reset (linger 0), as when a connection is cut."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


# -- a batch of ModelDeployments through the proxy ------------------------------------------------

SMOKE_PAYLOAD = "0.1,0.2,0.3,0.4"
SMOKE_ANSWER = {"Body": "0.73\n", "ContentType": "text/csv"}  # one payload, one canned answer


def batch_spec(i: int, artifact: str, role_arn: str, region: str) -> dict:
    """The i-th ModelDeployment: its own group, automatic approval and promotion."""
    return {
        "provider": "sagemaker",
        "region": region,
        "roleArn": role_arn,
        "modelPackageGroup": {"name": f"faults-{i}"},
        "model": {"artifact": artifact, "frameworkVersion": "3.2-0", "metrics": {"auc": 0.9}},
        "approval": {"policy": "Automatic", "rules": [{"metric": "auc", "min": 0.5}]},
        "staging": {"smokeTest": {"payload": SMOKE_PAYLOAD, "maxLatencyMs": 10000}},
        "production": {"promotion": "Automatic"},
    }


def operator_providers(read_timeout: float) -> Any:
    """A ProviderFactory building the sagemaker provider as the operator does (its default
    boto3 Config: standard retries, 3 attempts), with a read timeout short enough for a test
    to wait out; the endpoint comes from AWS_ENDPOINT_URL, as in the operator."""
    from botocore.config import Config

    from modeldeploy.providers import ProviderFactory
    from modeldeploy.providers.sagemaker import SageMakerProvider
    from modeldeploy.providers.sagemaker.provider import default_config

    config = default_config().merge(Config(read_timeout=read_timeout, connect_timeout=5))

    def build(spec: Any, read_only: bool) -> SageMakerProvider:
        return SageMakerProvider(spec.region, spec.roleArn, config=config)

    return ProviderFactory(default="sagemaker", builders={"sagemaker": build})


def is_ready(status: dict) -> bool:
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return status.get("phase") == "Deployed" and bool(ready) and ready[0]["status"] == "True"


@dataclass
class Drive:
    rounds: int = 0
    passes: int = 0
    stalls: list[str] = field(default_factory=list)  # "ns/name: message" of terminal stalls
    ready: bool = False


def drive(resources: list[Any], max_rounds: int) -> Drive:
    """Reconcile passes round-robin over the resources not yet Ready, as the operator's timer
    would (without waiting out its backoff). A stall is recorded, and the pass count bounded."""
    from modeldeploy import handlers

    out = Drive()
    for _ in range(max_rounds):
        pending = [r for r in resources if not is_ready(r.status)]
        if not pending:
            out.ready = True
            return out
        out.rounds += 1
        for res in pending:
            res.call(handlers.on_change)
            out.passes += 1
            stalled = res.status.get("stalled")
            if stalled or res.status.get("phase") == "Failed":
                meta = res.raw["metadata"]
                text = (stalled or {}).get("message") or res.status.get("message")
                out.stalls.append(f"{meta['namespace']}/{meta['name']}: {text}")
    out.ready = all(is_ready(r.status) for r in resources)
    return out


def _names(pages: Any, key: str, field_name: str, prefix: str) -> list[str]:
    return sorted(i[field_name] for p in pages for i in p[key] if i[field_name].startswith(prefix))


def audit(sm: Any, resources: list[Any]) -> list[str]:
    """Duplicates and leftovers in the emulator, read directly: per resource one version per
    artifact digest, one endpoint per stage on the config status records, and no endpoint
    config or model but the ones those endpoints use (each deployed exactly once here, so
    nothing is left over from earlier versions either)."""
    from modeldeploy import naming

    problems: list[str] = []
    for res in resources:
        meta, status = res.raw["metadata"], res.status
        who = f"{meta['namespace']}/{meta['name']}"
        group = res.raw["spec"]["modelPackageGroup"]["name"]
        listed = sm.list_model_packages(ModelPackageGroupName=group, MaxResults=100)
        digests = Counter(
            sm.describe_model_package(ModelPackageName=s["ModelPackageArn"])
            .get("CustomerMetadataProperties", {})
            .get("modeldeploy.dev/artifact-sha256", "?")
            for s in listed["ModelPackageSummaryList"]
        )
        problems += [f"{who}: {n} versions of {d[:12]}" for d, n in digests.items() if n != 1]
        prefix = naming.endpoint_prefix(meta["namespace"], meta["name"])
        endpoints = _names(
            sm.get_paginator("list_endpoints").paginate(NameContains=prefix),
            "Endpoints", "EndpointName", prefix,
        )  # fmt: skip
        wanted = [naming.endpoint_name(meta["namespace"], meta["name"], s) for s in STAGES]
        if endpoints != sorted(wanted):
            problems.append(f"{who}: endpoints {endpoints}, expected {sorted(wanted)}")
        configs = {status.get(s, {}).get("endpointConfigName") for s in STAGES}
        for name in wanted:
            if name in endpoints:
                used = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
                if used not in configs:
                    problems.append(f"{who}: {name} serves {used}, status says {configs}")
        models = {
            v["ModelName"]
            for c in configs
            if c
            for v in sm.describe_endpoint_config(EndpointConfigName=c)["ProductionVariants"]
        }
        for what, key, name_field, used in (
            ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", configs),
            ("list_models", "Models", "ModelName", models),
        ):
            pages = sm.get_paginator(what).paginate(NameContains=prefix)
            extra = set(_names(pages, key, name_field, prefix)) - used
            problems += [f"{who}: extra {name_field} {n}" for n in sorted(extra)]
    return problems


STAGES = ("staging", "production")
