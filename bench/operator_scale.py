"""The operator at scale (issue 12, item 5): N sagemaker-provider ModelDeployments applied at
once to a real API server, driven by `modeldeploy run` against the AWS emulator through a
counting proxy, against a plain boto3 script making the same pipelines' ten calls serially.

    .venv/bin/python bench/operator_scale.py [--n 20 [100 ...]] [--steady-seconds 65]
        [--resync-seconds 30] [--out bench/results/operator_scale]

Per N, everything is fresh (control plane, emulator, proxy, operator) and stopped by PID at the
end. Measured: time until all are Ready (seen through `kubectl get --watch`), create -> first
AWS call per resource and -> the first call of each operation (attributed by the names in each
request), AWS calls per resource by operation
until all are Ready, operator RSS sampled every 0.5 s from /proc (idle, peak, after), CPU from
/proc/<pid>/stat while converging and over a steady window of about two resyncs. Prints the
issue's table and saves <out>.json and <out>.md. Asserts no timings: exits 1 only when a
resource never became Ready within the timeout.

It reuses the tests' emulator, proxy (at rate 0: counting, no faults), operator process and
model builder (tests/ goes on sys.path, as bench/faults.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import build_model_tar
from emulator import REGION, ROLE_ARN, Emulator
from faultproxy import (
    SMOKE_ANSWER,
    SMOKE_PAYLOAD,
    FaultProxy,
    batch_spec,
    operation,
)
from operator_process import OperatorProcess

from modeldeploy.cluster import ControlPlane, ensure_binaries, wait_established

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CRD_FILE = ROOT / "crds" / "modeldeployment.yaml"
CRD_NAME = "modeldeployments.mlops.modeldeploy.dev"
NAMESPACE = "bench"
BUCKET = "modeldeploy-scale"
# Every remote name of resource i contains "scale-<i>": its group, its S3 key, and (through
# the namespace-name prefix) its endpoints, configs and models. The baseline uses "base-<i>".
TOKEN = re.compile(rb"scale-(\d{5})")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
READ_PREFIXES = ("Describe", "List", "Get", "S3 GET", "S3 HEAD")
ONE_ATTEMPT = Config(retries={"mode": "standard", "max_attempts": 1})


def resource_name(i: int) -> str:
    return f"scale-{i:05d}"


def kind_of(op: str) -> str:
    """read, mutating or invoke (the smoke test's data-plane call)."""
    if op == "InvokeEndpoint":
        return "invoke"
    return "read" if op.startswith(READ_PREFIXES) else "mutating"


# -- the counting proxy, attributing requests to resources -----------------------------------


class CountingProxy(FaultProxy):
    """tests/faultproxy.py at rate 0, also noting per resource its first request's time and its
    requests by operation (the proxy's own tally only counts by operation)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, rate=0.0)
        self.first_call: dict[str, float] = {}  # resource name -> wall time
        self.per_resource: dict[str, Counter[str]] = {}
        self.first_of: dict[str, dict[str, float]] = {}  # resource -> operation -> wall time

    def forward(
        self, command: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        now = time.time()
        target = next((v for k, v in headers if k.lower() == "x-amz-target"), None)
        op = operation(command, path, target)
        owners = {m.decode() for m in TOKEN.findall(path.encode() + b" " + body)}
        with self._lock:
            for digits in owners:
                name = f"scale-{digits}"
                self.first_call.setdefault(name, now)
                self.per_resource.setdefault(name, Counter())[op] += 1
                self.first_of.setdefault(name, {}).setdefault(op, now)
        return super().forward(command, path, headers, body)

    def calls(self) -> Counter[str]:
        with self._lock:
            return Counter(self.tally.calls)


# -- the operator process, seen from /proc ---------------------------------------------------


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Live children, grandchildren... (the artifact inspection runs in a subprocess)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *descendants(kid)]
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own user+system, reaped children's user+system) in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


@dataclass
class Sampler:
    """RSS of the operator (and of its live subprocesses) every `interval` seconds."""

    pid: int
    interval: float = 0.5
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (t, own, kids)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = sum(rss_mib(k) for k in descendants(self.pid))
            self.samples.append((time.monotonic(), rss_mib(self.pid), kids))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def window(self, start: float, end: float) -> list[tuple[float, float, float]]:
        return [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]


# -- the cluster side ------------------------------------------------------------------------


@dataclass
class Kube:
    kubectl: Path
    kubeconfig: Path

    def run(self, *args: str, timeout: float = 300) -> str:
        # Only this kubeconfig: never ~/.kube/config or an outer KUBECONFIG.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args[:3])} exited {proc.returncode}: {proc.stderr}"
            )
        return proc.stdout

    def watch(self, *args: str) -> subprocess.Popen:
        """`kubectl ... --watch`, its lines on stdout."""
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        return subprocess.Popen(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args, "--watch"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip


@contextmanager
def control_plane(state: Path) -> Iterator[Kube]:
    """A fresh etcd + kube-apiserver with the CRD, stopped by PID when done. build=False: the
    binaries must already be in .cache/ (`make controlplane`); this never starts a Go build."""
    binaries = ensure_binaries(build=False)
    cp = ControlPlane(state, binaries, detach=False)
    try:
        cp.up()
        kube = Kube(binaries.kubectl, cp.kubeconfig_path)
        kube.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        wait_established(binaries.kubectl, cp.kubeconfig_path, CRD_NAME)
        kube.run("create", "namespace", NAMESPACE)
        yield kube
    finally:
        cp.down()


def manifest(n: int) -> str:
    """N ModelDeployments as one multi-document file: the shape of tests/faultproxy.py's batch
    (automatic approval and promotion, a smoke test, a group each), under bench names."""
    docs = []
    for i in range(n):
        name = resource_name(i)
        spec = batch_spec(i, f"s3://{BUCKET}/{name}/model.tar.gz", ROLE_ARN, REGION)
        spec["modelPackageGroup"]["name"] = name
        docs.append(
            {
                "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec,
            }
        )
    return yaml.safe_dump_all(docs)


READY_COLUMNS = ",".join(
    [
        "NAME:.metadata.name",
        "PHASE:.status.phase",
        'READY:.status.conditions[?(@.type=="Ready")].status',
        "CREATED:.metadata.creationTimestamp",
    ]
)


def wait_all_ready(
    kube: Kube, n: int, timeout: float, alive: Callable[[], None]
) -> tuple[dict[str, float], dict[str, float]]:
    """Watch until N are Ready: (first time each was seen Ready, creation times). One stream
    of changes, not a full listing a second: at N=1000 that was ~5 MB of JSON a second for
    kubectl, the API server and this script to make and read, on the cores the operator and
    the emulator it measures share."""
    ready: dict[str, float] = {}
    created: dict[str, float] = {}

    def read(watch: subprocess.Popen) -> None:
        for line in watch.stdout or ():
            if len(fields := line.split()) != 4:
                continue  # not a row (a warning kubectl printed)
            name, phase, ready_status, stamp = fields
            stamp_t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            created.setdefault(name, stamp_t.timestamp())
            if phase == "Deployed" and ready_status == "True":
                ready.setdefault(name, time.time())

    def stuck() -> str:
        """What the resources not seen Ready say, read again (the watch may have missed it)."""
        items = json.loads(kube.run("-n", NAMESPACE, "get", "mdep", "-o", "json"))["items"]
        return "; ".join(
            f"{i['metadata']['name']}: {(i.get('status') or {}).get('phase')} "
            f"{(i.get('status') or {}).get('message', '')!r}"
            for i in items
            if i["metadata"]["name"] not in ready
        )[:4000]

    deadline = time.monotonic() + timeout
    watch = None
    try:
        while len(ready) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ready)} of {n} Ready after {timeout:.0f} s: {stuck()}")
            if watch is None or watch.poll() is not None:  # (again: the server ends watches)
                watch = kube.watch("-n", NAMESPACE, "get", "mdep", "--no-headers",
                                   "-o", f"custom-columns={READY_COLUMNS}")  # fmt: skip
                threading.Thread(target=read, args=(watch,), daemon=True).start()
            alive()
            time.sleep(0.2)
    finally:
        if watch is not None:
            watch.terminate()
            watch.wait(10)
    return dict(ready), dict(created)


# -- the AWS side ----------------------------------------------------------------------------


def aws_env(tmp: str, endpoint: str) -> dict[str, str]:
    """Fake credentials and none of the host's AWS configuration (as tests/conftest.py); also
    set in this process for the setup and baseline clients."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        os.environ.pop(var, None)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": f"{tmp}/absent",
        "AWS_SHARED_CREDENTIALS_FILE": f"{tmp}/absent",
        "AWS_ENDPOINT_URL": endpoint,
    }
    os.environ.update(env)
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"]))
    return env


@contextmanager
def emulator_and_proxy() -> Iterator[tuple[Emulator, CountingProxy]]:
    emulator = Emulator.start()
    proxy: CountingProxy | None = None
    try:
        proxy = CountingProxy(emulator.url).start()
        yield emulator, proxy
    finally:
        if proxy:
            proxy.stop()
        emulator.stop()


def upload_artifacts(emulator: Emulator, n: int) -> None:
    """One copy of the same artifact per resource, straight to the emulator (not counted)."""
    s3 = boto3.client("s3", endpoint_url=emulator.url, config=ONE_ATTEMPT)
    s3.create_bucket(Bucket=BUCKET)
    model = build_model_tar()
    for i in range(n):
        s3.put_object(Bucket=BUCKET, Key=f"{resource_name(i)}/model.tar.gz", Body=model)
    emulator.set_invoke_results([SMOKE_ANSWER])


def serial_pipeline(sm: Any, runtime: Any, i: int, image: str) -> None:
    """The ten calls the sagemaker provider needs for one pipeline, nothing else: group,
    version, approval, then model, endpoint config and endpoint per stage with the smoke test's
    invoke after staging (the emulator's endpoints are InService at once)."""
    group = f"base-{i:05d}"
    sm.create_model_package_group(ModelPackageGroupName=group)
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": f"s3://{BUCKET}/{group}/m.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus="PendingManualApproval",
    )["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    for stage in ("staging", "prod"):
        name = f"{group}-{stage}"
        sm.create_model(
            ModelName=f"{name}-m", ExecutionRoleArn=ROLE_ARN, Containers=[{"ModelPackageName": arn}]
        )
        variant = {"VariantName": "AllTraffic", "ModelName": f"{name}-m"}
        variant |= {"InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        sm.create_endpoint_config(EndpointConfigName=f"{name}-c", ProductionVariants=[variant])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
        if stage == "staging":
            runtime.invoke_endpoint(
                EndpointName=name, Body=SMOKE_PAYLOAD.encode(), ContentType="text/csv"
            )["Body"].read()


def serial_boto3(emulator: Emulator, proxy: CountingProxy, n: int) -> dict:
    """N pipelines one after the other through the same proxy (the same hop the operator pays),
    on the emptied emulator, after the operator has stopped."""
    from modeldeploy.artifacts.compat import image_uri

    emulator.reset()
    emulator.set_invoke_results([SMOKE_ANSWER])
    image = image_uri(REGION, "3.2-0")  # once, outside the timing
    sm = boto3.client("sagemaker", endpoint_url=proxy.url, config=ONE_ATTEMPT)
    runtime = boto3.client("sagemaker-runtime", endpoint_url=proxy.url, config=ONE_ATTEMPT)
    sm.list_model_package_groups(MaxResults=1)  # the client's lazy setup, outside the timing
    before = proxy.calls()
    start = time.monotonic()
    for i in range(n):
        serial_pipeline(sm, runtime, i, image)
    seconds = time.monotonic() - start
    calls = proxy.calls() - before
    return {
        "seconds": round(seconds, 2),
        "calls_per_pipeline": round(sum(calls.values()) / n, 2),
        "calls_by_operation": dict(sorted(calls.items())),
    }


# -- the operator, phase by phase -----------------------------------------------------------


@dataclass
class Mark:
    """Counters at one moment: everything a phase's figures are differences of."""

    t: float
    cpu: float
    cpu_children: float
    calls: Counter[str]
    passes: float


def mark(op: OperatorProcess, proxy: CountingProxy) -> Mark:
    assert op.proc is not None
    own, kids = cpu_seconds(op.proc.pid)
    passes = sum(
        v for (name, _), v in op.metrics().items() if name == "modeldeploy_reconcile_total"
    )
    return Mark(time.monotonic(), own, kids, proxy.calls(), passes)


def start_operator(kube: Kube, env: dict[str, str], args: argparse.Namespace) -> OperatorProcess:
    """`modeldeploy run` on the sagemaker provider with the default timings (OperatorProcess's
    test-speed ones are overridden), the resync shortened so a window sees two."""
    timings = {
        "MODELDEPLOY_ACT_SECONDS": str(args.act_seconds),
        "MODELDEPLOY_CHAIN_SECONDS": str(args.chain_seconds),
        "MODELDEPLOY_VIEW_SECONDS": str(args.view_seconds),
        "MODELDEPLOY_AWS_MAX_TPS": str(args.max_tps),
        "MODELDEPLOY_POLL_SECONDS": str(args.poll_seconds),
        "MODELDEPLOY_RESYNC_SECONDS": str(args.resync_seconds),
    }
    op = OperatorProcess(
        kube.kubeconfig,
        env | timings | {"MODELDEPLOY_DEFAULT_PROVIDER": "sagemaker"},
    )
    op.start()
    op.metrics()  # waits until it listens
    return op


def wait_quiet(pid: int, *, below: float = 0.05, limit: float = 30) -> float:
    """Seconds until the process used less than `below` CPU seconds in one second (start-up
    done: imports, the default provider's clients built in the background), at most `limit`."""
    start = time.monotonic()
    last = sum(cpu_seconds(pid))
    while time.monotonic() - start < limit:
        time.sleep(1)
        now = sum(cpu_seconds(pid))
        if now - last < below:
            break
        last = now
    return round(time.monotonic() - start, 1)


def idle_phase(op: OperatorProcess, proxy: CountingProxy, sampler: Sampler, seconds: float) -> dict:
    """The started operator with no resource at all, once its start-up work is done."""
    assert op.proc is not None
    settled = wait_quiet(op.proc.pid)
    before = mark(op, proxy)
    time.sleep(seconds)
    after = mark(op, proxy)
    rss = [s[1] for s in sampler.window(before.t, after.t)]
    return {
        "rss_mib": round(statistics.median(rss), 1),
        "cpu_per_min": round((after.cpu - before.cpu) / (after.t - before.t) * 60, 2),
        "settled_after_s": settled,
    }


def p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def api_requests(kube: Kube) -> Counter[str]:
    """The API server's requests so far by verb and resource (its apiserver_request_total),
    the bench's own included (the apply's creates, the watch)."""
    counts: Counter[str] = Counter()
    for line in kube.run("get", "--raw", "/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        resource = "/".join(filter(None, (labels.get("resource"), labels.get("subresource"))))
        counts[f"{labels.get('verb')} {resource}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


BODY_KEYS = ("body_bytes", "managed_fields_bytes", "status_bytes")


def body_sizes(kube: Kube) -> dict:
    """One converged resource as JSON (what kopf keeps of each object), and its managedFields."""
    body = json.loads(kube.run("-n", NAMESPACE, "get", "mdep", resource_name(0), "-o", "json"))
    managed = body.get("metadata", {}).get("managedFields") or []
    return {
        "body_bytes": len(json.dumps(body, separators=(",", ":"))),
        "managed_fields_bytes": len(json.dumps(managed, separators=(",", ":"))),
        "status_bytes": len(json.dumps(body.get("status") or {}, separators=(",", ":"))),
    }


def converge_phase(
    kube: Kube, op: OperatorProcess, proxy: CountingProxy, n: int, args: argparse.Namespace
) -> tuple[dict, Mark]:
    path = Path(tempfile.mkstemp(prefix="modeldeploy-scale-", suffix=".yaml")[1])
    path.write_text(manifest(n))
    try:
        api_before = api_requests(kube)
        before = mark(op, proxy)
        wall0 = time.time()
        kube.run("apply", "-f", str(path), timeout=max(300, n))
        applied = time.monotonic() - before.t
        ready, created = wait_all_ready(kube, n, args.timeout or 300 + n, op.assert_alive)
        after = mark(op, proxy)
        api = api_requests(kube) - api_before
    finally:
        path.unlink()
    # creationTimestamp has whole seconds: the apply's start bounds it from below.
    born = {name: max(wall0, t) for name, t in created.items()}
    first = [proxy.first_call[k] - born[k] for k in born if k in proxy.first_call]
    with proxy._lock:
        per = {k: sum(c.values()) for k, c in proxy.per_resource.items()}
        # Where the time goes: create -> each operation's first call, p50 over the resources.
        firsts: dict[str, list[float]] = {}
        for k, ops in proxy.first_of.items():
            for op_, t in ops.items():
                if k in born:
                    firsts.setdefault(op_, []).append(t - born[k])
    calls = after.calls - before.calls
    return {
        "all_ready_s": round(after.t - before.t, 1),
        "apply_s": round(applied, 1),
        "ready_p50_s": p50([ready[k] - born[k] for k in ready]),
        "first_call_p50_s": p50(first),
        "first_call_max_s": round(max(first), 2) if first else None,
        "first_call_attributed": len(first),
        "calls_per_resource": round(sum(calls.values()) / n, 1),
        "calls_per_resource_by_operation": {
            op_: round(c / n, 2) for op_, c in sorted(calls.items(), key=lambda x: -x[1])
        },
        "calls_per_resource_min_max": [min(per.values()), max(per.values())] if per else None,
        "first_of_operation_p50_s": dict(
            sorted(((o, p50(ts)) for o, ts in firsts.items()), key=lambda x: x[1] or 0)
        ),
        "calls_unattributed": sum(calls.values()) - sum(per.values()),
        "passes_per_resource": round((after.passes - before.passes) / n, 1),
        "api_requests_per_resource": {
            k: round(c / n, 2) for k, c in sorted(api.items(), key=lambda x: -x[1]) if c / n >= 0.05
        },
        "cpu_s": round(after.cpu - before.cpu, 2),
        "cpu_children_s": round(after.cpu_children - before.cpu_children, 2),
    }, before


def steady_phase(
    op: OperatorProcess, proxy: CountingProxy, n: int, args: argparse.Namespace
) -> dict:
    """All Ready and nothing changing: what a window of about two resyncs costs."""
    time.sleep(args.settle_seconds)  # the last passes' status writes
    before = mark(op, proxy)
    time.sleep(args.steady_seconds)
    after = mark(op, proxy)
    window = after.t - before.t
    resyncs = window / args.resync_seconds
    calls = after.calls - before.calls
    by_kind: Counter[str] = Counter()
    for op_, c in calls.items():
        by_kind[kind_of(op_)] += c
    passes = after.passes - before.passes
    return {
        "window_s": round(window, 1),
        "resyncs_in_window": round(resyncs, 2),
        "cpu_s": round(after.cpu - before.cpu, 2),
        "cpu_per_min": round((after.cpu - before.cpu) / window * 60, 2),
        "passes_per_resource_per_resync": round(passes / n / resyncs, 2),
        # What a resync costs, so the idle CPU at the default resync (600 s) can be told
        # without a window of two of them (20 minutes).
        "cpu_per_pass_ms": round((after.cpu - before.cpu) / passes * 1000, 2) if passes else None,
        # Resyncs are spread by ±10 %, so window/resync only estimates how many there were;
        # per pass is exact (a steady resource makes one pass per resync).
        "per_resource_per_resync": {
            k: round(by_kind[k] / n / resyncs, 2) for k in ("read", "mutating", "invoke")
        },
        "per_resync_pass": {
            k: round(by_kind[k] / passes, 2) if passes else None
            for k in ("read", "mutating", "invoke")
        },
        "calls_by_operation": dict(sorted(calls.items())),
    }


def revision() -> str:
    """The commit measured, marked when the operator's code differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "operator"], check=False)
    return head.stdout.strip() + (" (operator/ modified)" if dirty.returncode else "")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def operator_run(
    kube: Kube, proxy: CountingProxy, env: dict[str, str], args: argparse.Namespace, n: int
) -> dict:
    op = start_operator(kube, env, args)
    assert op.proc is not None
    sampler = Sampler(op.proc.pid).start()
    try:
        idle = idle_phase(op, proxy, sampler, args.idle_seconds)
        converge, start = converge_phase(kube, op, proxy, n, args)
        steady = steady_phase(op, proxy, n, args)
        end = time.monotonic()
        run = sampler.window(start.t, end)
        last = sampler.window(end - 5, end)
        rss = {
            "idle_mib": idle["rss_mib"],
            "peak_mib": round(max(s[1] for s in run), 1),
            "after_mib": round(statistics.median(s[1] for s in last), 1),
            "subprocess_peak_mib": round(max(s[2] for s in run), 1),
            "samples": len(sampler.samples),
        }
        return {
            "idle_cpu_per_min_no_resources": idle["cpu_per_min"],
            "start_up_settled_s": idle["settled_after_s"],
            "converge": converge,
            "steady": steady,
            "rss": rss,
            "one_body": body_sizes(kube),
        }
    except Exception:
        print(op.tail(40), file=sys.stderr)
        raise
    finally:
        sampler.stop()
        op.stop()
        op.log.unlink(missing_ok=True)


def measure(n: int, args: argparse.Namespace) -> dict:
    """One N, everything fresh; the operator first, then the baseline on the emptied emulator."""
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = loadavg()
    with (
        tempfile.TemporaryDirectory(prefix="modeldeploy-scale-") as tmp,
        control_plane(Path(tmp) / "cp") as kube,
        emulator_and_proxy() as (emulator, proxy),
    ):
        env = aws_env(tmp, proxy.url)
        upload_artifacts(emulator, n)
        figures = operator_run(kube, proxy, env, args, n)
        figures["serial_boto3"] = serial_boto3(emulator, proxy, n)
    return {"n": n, "at": at, "loadavg_before": load_before, "loadavg_after": loadavg(), **figures}


# -- report ----------------------------------------------------------------------------------


def projected_idle(run: dict) -> float | None:
    per_pass = run["steady"]["cpu_per_pass_ms"]
    if per_pass is None:
        return None
    return round(run["n"] / 10 * per_pass / 1000 + run["idle_cpu_per_min_no_resources"], 2)


def per_thousand(run: dict) -> float:
    return round((run["rss"]["peak_mib"] - run["rss"]["idle_mib"]) / run["n"] * 1000, 0)


def table(runs: list[dict]) -> str:
    """The issue's table, then the rest of what was measured, one column per N."""

    def row(label: str, cell: Callable[[dict], str]) -> str:
        return f"| {label} | " + " | ".join(cell(r) for r in runs) + " |"

    def rpr(r: dict) -> str:
        k = r["steady"]["per_resync_pass"]
        return f"{k['read']} / {k['mutating']}"

    lines = [
        "| | " + " | ".join(f"N={r['n']}" for r in runs) + " |",
        "|---|" + "---|" * len(runs),
        row("all Ready", lambda r: f"{r['converge']['all_ready_s']} s"),
        row("serial boto3 for the same pipelines", lambda r: f"{r['serial_boto3']['seconds']} s"),
        row(
            "operator RSS idle / peak",
            lambda r: f"{r['rss']['idle_mib']:.0f} / {r['rss']['peak_mib']:.0f} MiB",
        ),
        row(
            "AWS calls per resource to converge", lambda r: f"{r['converge']['calls_per_resource']}"
        ),
        row(
            "operator CPU per minute when nothing changes",
            lambda r: f"{r['steady']['cpu_per_min']} s",
        ),
        row(
            "create -> first AWS call, p50 / max",
            lambda r: (
                f"{r['converge']['first_call_p50_s']} / {r['converge']['first_call_max_s']} s"
            ),
        ),
        row("create -> Ready per resource, p50", lambda r: f"{r['converge']['ready_p50_s']} s"),
        row("operator RSS after the steady window", lambda r: f"{r['rss']['after_mib']:.0f} MiB"),
        row(
            "operator CPU while converging (+ inspection subprocesses)",
            lambda r: f"{r['converge']['cpu_s']} (+{r['converge']['cpu_children_s']}) s",
        ),
        row("passes per resource to converge", lambda r: f"{r['converge']['passes_per_resource']}"),
        row("steady: read / mutating calls per resource per resync pass", rpr),
        row("operator CPU per steady pass", lambda r: f"{r['steady']['cpu_per_pass_ms']} ms"),
        row(
            "CPU per minute when nothing changes at the default resync (600 s), from the above",
            lambda r: f"{projected_idle(r)} s",
        ),
        row("peak RSS above idle per 1,000 resources", lambda r: f"{per_thousand(r)} MiB"),
        row(
            "one resource's JSON: all / managedFields / status",
            lambda r: "{body_bytes} / {managed_fields_bytes} / {status_bytes} B".format(
                **r.get("one_body", dict.fromkeys(BODY_KEYS, "-"))
            ),
        ),
        row(
            "idle CPU per minute before any resource (after start-up settled)",
            lambda r: f"{r['idle_cpu_per_min_no_resources']} s",
        ),
        row("start-up work settled after", lambda r: f"{r.get('start_up_settled_s', '-')} s"),
        row(
            "load average (1 min) before / after the run",
            lambda r: f"{r['loadavg_before'][0]} / {r['loadavg_after'][0]}",
        ),
    ]
    return "\n".join(lines)


def per_resource_table(runs: list[dict], key: str, title: str, total: str | None) -> str:
    names = sorted({o for r in runs for o in r["converge"].get(key, {})})
    lines = [
        f"| {title} | " + " | ".join(f"N={r['n']}" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for name in names:
        cells = [str(r["converge"].get(key, {}).get(name, 0)) for r in runs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if total:
        lines.append("| total | " + " | ".join(str(r["converge"][total]) for r in runs) + " |")
    return "\n".join(lines)


def by_operation(runs: list[dict]) -> str:
    aws = per_resource_table(
        runs,
        "calls_per_resource_by_operation",
        "AWS calls per resource to converge",
        "calls_per_resource",
    )
    api = per_resource_table(
        runs,
        "api_requests_per_resource",
        "API server requests per resource to converge (the bench's apply and watch included)",
        None,
    )
    return f"{aws}\n\n{api}"


def markdown(result: dict) -> str:
    s = result["settings"]
    head = (
        f"# Operator at scale ({result['at']}, {result['commit']})\n\n"
        f"`bench/operator_scale.py`: sagemaker provider against the AWS emulator through a "
        f"counting proxy, real API server; act {s['act_seconds']} s, view {s['view_seconds']} s, "
        f"AWS TPS cap {s['max_tps'] or 'off'}, "
        f"poll {s['poll_seconds']} s, resync {s['resync_seconds']} s; steady window "
        f"{s['steady_seconds']} s; {s['cores']} cores.\n"
    )
    note = f"\n{result['note']}\n" if result["note"] else ""
    runs = result["runs"]
    return f"{head}{note}\n{table(runs)}\n\n{by_operation(runs)}\n\n{timeline(runs)}\n"


def timeline(runs: list[dict]) -> str:
    """Create -> the first call of each operation, p50 over the resources: where time goes."""
    firsts = [r["converge"].get("first_of_operation_p50_s", {}) for r in runs]
    ops = sorted({o for f in firsts for o in f}, key=lambda o: firsts[0].get(o) or 0)
    lines = [
        "| create -> first call, p50 | " + " | ".join(f"N={r['n']}" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for o in ops:
        lines.append(f"| {o} | " + " | ".join(f"{f.get(o, '')} s" for f in firsts) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20], help="resources, e.g. 20 100")
    parser.add_argument("--steady-seconds", type=float, help="default: two resyncs and 5 s")
    parser.add_argument("--resync-seconds", type=float, default=30)
    parser.add_argument("--view-seconds", type=float, default=60, help="sagemaker views' age")
    parser.add_argument(
        "--max-tps",
        type=float,
        default=0,
        help="the operator's cap (0: off; the emulator has no quota)",
    )
    parser.add_argument("--act-seconds", type=float, default=1)
    parser.add_argument("--chain-seconds", type=float, default=5, help="0: a pass per call")
    parser.add_argument("--poll-seconds", type=float, default=30)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--settle-seconds", type=float, default=5)
    parser.add_argument("--timeout", type=float, help="until all Ready; default 300 s + 1 s per N")
    parser.add_argument("--note", default="", help="a line for the report (machine load...)")
    parser.add_argument("--out", type=Path, default=RESULTS / "operator_scale")
    args = parser.parse_args()
    args.steady_seconds = args.steady_seconds or 2 * args.resync_seconds + 5
    result: dict[str, Any] = {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": revision(),
        "note": args.note,
        "settings": {
            k: getattr(args, k)
            for k in (
                "view_seconds",
                "max_tps",
                "act_seconds",
                "poll_seconds",
                "resync_seconds",
                "steady_seconds",
                "idle_seconds",
                "settle_seconds",
            )
        }
        | {"cores": os.cpu_count()},
        "runs": [],
    }
    broken = ""
    for n in args.n:
        try:
            result["runs"].append(measure(n, args))
        except TimeoutError as err:  # the one failure this benchmark reports as such
            broken = f"N={n}: {err}"
            break
    if result["runs"]:
        text = markdown(result)
        print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)
    if broken:
        print(f"run broke: {broken}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
