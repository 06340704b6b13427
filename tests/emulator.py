"""The local AWS emulator (moto in server mode) as a real subprocess on loopback.

Tests talk to it over HTTP exactly as the operator talks to AWS: boto3 clients whose endpoint
comes from AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
# Loopback never goes through a proxy, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen
    log: IO[bytes]

    @classmethod
    def start(cls, timeout: float = 30.0, host: str = "127.0.0.1") -> Emulator:
        """`host`: where it listens; pods of a local node reach it on the node's address."""
        last = ""
        for _ in range(3):  # the free port may be taken between probe and bind: try another
            port = free_port()
            # The server logs every request: a file, not a pipe nobody drains, takes them.
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            emulator = cls(f"http://{host}:{port}", proc, log)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if emulator.ready():
                    return emulator
                time.sleep(0.1)
            log.seek(0)
            last = log.read().decode(errors="replace")[-2000:]
            emulator.stop()
        raise RuntimeError(f"the AWS emulator (moto server) did not start:\n{last}")

    def ready(self) -> bool:
        try:
            with _OPENER.open(f"{self.url}/moto-api/data.json", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _post(self, path: str, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        with _OPENER.open(req, timeout=10) as resp:
            resp.read()

    def reset(self) -> None:
        """Forget every resource (all services, all accounts)."""
        self._post("/moto-api/reset")

    def set_invoke_results(self, results: list[dict], region: str = REGION) -> None:
        """Canned InvokeEndpoint answers: [{"Body": str, "ContentType": str}, ...].

        The emulator hands them out in order, one per distinct request body; it answers a
        repeated request with the body it gave that request before, and answers with the
        literal body "body" once the list is used up.
        """
        self._post(
            "/moto-api/static/sagemaker/endpoint-results",
            {"account_id": ACCOUNT, "region": region, "results": results},
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
