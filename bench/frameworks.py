"""Why `modeldeploy serve` is an asyncio Protocol over httptools: the HTTP layer alone, measured.

Each variant answers POST with a fixed one-line CSV body, no model, so the numbers are what the
framework costs per request. Runs in the benchmark venv (.cache/bench-venv, made by
bench/serving.py; httptools is added to it here), one worker process each, wrk -t1 -c8, the 1-row
request body, interleaved rounds:

    .venv/bin/python bench/frameworks.py [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving

ANSWER = b"0.9982981\n"

VARIANTS = {
    "asyncio+httptools Protocol": """
import asyncio, httptools, sys
ANSWER = {answer!r}
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/csv\\r\\nContent-Length: %d\\r\\n\\r\\n"
class P(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body = []
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_body(self, chunk):
        self.body.append(chunk)
    def on_message_complete(self):
        self.body = []
        self.transport.write(HEAD % len(ANSWER) + ANSWER)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
""",
    "aiohttp.web": """
import sys
from aiohttp import web
ANSWER = {answer!r}
async def invoke(request):
    await request.read()
    return web.Response(body=ANSWER, content_type="text/csv")
async def ping(request):
    return web.Response()
app = web.Application()
app.router.add_post("/invocations", invoke)
app.router.add_get("/ping", ping)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""",
    "uvicorn raw ASGI (httptools, uvloop)": """
import sys, uvicorn
ANSWER = {answer!r}
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/csv")]}})
    await send({{"type": "http.response.body", "body": ANSWER}})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, http="httptools", loop="uvloop")
""",
    "uvicorn + FastAPI": """
import sys, uvicorn
from fastapi import FastAPI, Request, Response
ANSWER = {answer!r}
app = FastAPI()
@app.post("/invocations")
async def invoke(request: Request):
    await request.body()
    return Response(ANSWER, media_type="text/csv")
@app.get("/ping")
async def ping():
    return Response()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, http="httptools", loop="uvloop")
""",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    wrk = serving.ensure_wrk()
    python = serving.ensure_mlserver()
    subprocess.run([str(python), "-m", "pip", "install", "-q", "httptools"], check=True)
    target = serving.Target("framework", "", "http")
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "row.csv"
        body.write_text(",".join(["1.5"] * 30) + "\n")
        for round_no in range(args.rounds):
            names = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                script = Path(tmp) / "server.py"
                script.write_text(VARIANTS[name].format(answer=ANSWER))
                port = serving.free_port()
                proc = subprocess.Popen([str(python), str(script), str(port)])
                try:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        probe = subprocess.run(
                            ["curl", "-sf", "-X", "POST", f"http://127.0.0.1:{port}/invocations"],
                            capture_output=True,
                        )
                        if probe.returncode == 0:
                            break
                        time.sleep(0.2)
                    serving.run_wrk(wrk, target, port, body, 1, args.connections)
                    result = serving.run_wrk(
                        wrk, target, port, body, args.seconds, args.connections
                    )
                finally:
                    serving.stop(proc)
                runs[name].append(result)
                print(f"{name:40s} {result['requests_per_s']:9.0f} req/s", flush=True)
    print("\n| HTTP layer (one process, fixed answer) | requests/s (median) | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    summary = {}
    for name, results in runs.items():
        median = sorted(results, key=lambda r: r["requests_per_s"])[len(results) // 2]
        summary[name] = median
        print(
            f"| {name} | {median['requests_per_s']:,.0f} | {median['p50_ms']:.2f} | "
            f"{median['p99_ms']:.2f} |"
        )
    out = serving.RESULTS / "frameworks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
