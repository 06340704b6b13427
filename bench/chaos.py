"""A chaos run of the operator (issue 11): `kill -9` of the operator at random moments across
several pipelines, an API server outage, a registry loss; invariants checked after each.

    .venv/bin/python bench/chaos.py [--kills 50] [--seed 11] [--pipelines 4] [--skip-registry-loss]

It starts its own local control plane (the binaries `make controlplane` built into .cache/),
the operator as a process (provider `local`, process hosting, a temporary MODELDEPLOY_LOCAL_DIR,
short timings) and N ModelDeployments (Automatic approval and promotion, each its own group and
a small XGBoost model trained as `modeldeploy train` does). Spec changes (a new artifact, a
rollback through promotedVersion, back to Automatic) land before most kills, so kills fall in
registration, deployments, smoke tests and re-adoption, not only in steady state.

Invariants, read from the local registry (read-only, through the provider's state API), the
resources and /proc: one version per artifact per group and the history expected from what was
applied; version numbers never reused for another artifact, none lost; status.latestVersion
never goes backwards; at most one server per endpoint and none that no row tracks; each stage
serves the version its spec asks for. Prints the figures and saves bench/results/chaos.json;
exits 1 when any invariant was violated. Asserts no timings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modeldeploy import naming, processes
from modeldeploy.cluster import ControlPlane, wait_established
from modeldeploy.providers.local.state import State
from modeldeploy.training.train import TrainResult, train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's kubectl and operator-process helpers
from kube import CRD_FILE, CRD_NAME, kubectl, kubectl_path  # noqa: E402
from operator_process import OperatorProcess, parse_metrics  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NS = "chaos"
STAGES = ("staging", "production")
# Timings: short loops so a kill is followed by work within seconds, not minutes.
OPERATOR_ENV = {
    "MODELDEPLOY_DEFAULT_PROVIDER": "local",
    "MODELDEPLOY_LOCAL_HOSTING": "process",
    "MODELDEPLOY_LOCAL_RESYNC_SECONDS": "5",
    "MODELDEPLOY_RESYNC_SECONDS": "10",
}
MAX_KILL_DELAY = 10.0  # a kill lands up to this long after the last change or restart
MAX_RESTART_DELAY = 2.0  # the operator stays dead this long at most (servers carry on alone)
CHANGE_CHANCE = 0.75  # a spec change before a kill
CHAINED_KILL_CHANCE = 0.3  # the next kill lands in the recovery from this one
SETTLE_TIMEOUT = 240.0
DYING_GRACE = 10.0  # a server being stopped may take this long to go before it is an orphan


# -- processes under our local dir ----------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    kind: str  # operator, serve, worker, other
    cmdline: str
    endpoint: str  # what its MODELDEPLOY_LOCAL_ENDPOINT names ("" if unset)


def _kind(args: list[str]) -> str:
    if "modeldeploy.serving.workers" in args:
        return "worker"
    if "modeldeploy" in args:
        after = args[args.index("modeldeploy") + 1 : args.index("modeldeploy") + 2]
        return {"serve": "serve", "run": "operator"}.get(after[0] if after else "", "other")
    return "other"


def scan(local_dir: Path) -> list[Proc]:
    """Our live processes whose environment names this local dir: the operator, its servers
    (which inherit it) and anything else they started."""
    marker = f"MODELDEPLOY_LOCAL_DIR={local_dir}".encode()
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if d.stat().st_uid != os.getuid():
                continue
            environ = (d / "environ").read_bytes().split(b"\0")
            if marker not in environ:
                continue
            args = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        named = [e for e in environ if e.startswith(b"MODELDEPLOY_LOCAL_ENDPOINT=")]
        endpoint = named[0].split(b"=", 1)[1].decode() if named else ""
        if args and args[0]:  # a zombie has no command line: it is gone
            found.append(Proc(int(d.name), _kind(args), " ".join(args).strip(), endpoint))
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- pipelines and what their specs ask for -------------------------------------------------


@dataclass
class Pipeline:
    name: str
    models: list[TrainResult]  # distinct artifacts in the order applied: version i is models[i-1]
    promoted: int | None = None  # Manual promotion to this version; None: Automatic

    @property
    def newest(self) -> int:
        return len(self.models)

    @property
    def production(self) -> int:
        return self.promoted or self.newest

    def endpoint(self, stage: str) -> str:
        return naming.endpoint_name(NS, self.name, stage)

    def manifest(self) -> dict:
        doc = yaml.safe_load((ROOT / "manifests" / "examples" / "local.yaml").read_text())
        doc["metadata"] = {"name": self.name, "namespace": NS}
        spec = doc["spec"]
        spec["modelPackageGroup"] = {"name": self.name, "description": "chaos run"}
        spec["model"] |= self.model_spec()
        spec["approval"]["rules"] = [{"metric": "auc", "min": 0.9}]
        # A loaded 2-core machine under kills: latency is not what this run judges.
        spec["staging"]["smokeTest"]["maxLatencyMs"] = 10000
        spec["production"] = {"instanceCount": 1, "promotion": "Automatic"}
        return doc

    def model_spec(self) -> dict:
        model = self.models[-1]
        return {"artifact": f"file://{model.model_tar}", "metrics": f"file://{model.evaluation}"}


def ready_condition(status: dict) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


def unsettled(pipelines: list[Pipeline], items: dict[str, dict]) -> list[str]:
    """Why the resources do not yet serve what their specs ask for (empty: settled)."""
    why = []
    for p in pipelines:
        obj = items.get(p.name)
        if obj is None:
            why.append(f"{p.name}: missing")
            continue
        status, generation = obj.get("status") or {}, obj["metadata"]["generation"]
        ready = ready_condition(status)
        served = {s: (status.get(s) or {}).get("version") for s in STAGES}
        wanted = {"staging": p.newest, "production": p.production}
        if ready.get("status") != "True" or ready.get("observedGeneration") != generation:
            why.append(f"{p.name}: {status.get('phase')} {status.get('message', '')[:120]}")
        elif served != wanted:
            why.append(f"{p.name}: serves {served}, spec asks for {wanted}")
    return why


def _short(versions: dict[int, str]) -> dict[int, str]:
    return {n: sha[:12] for n, sha in versions.items()}


# -- invariants -----------------------------------------------------------------------------


@dataclass
class Invariants:
    """Checks done and violations found, by kind; the history seen so far."""

    checks: Counter = field(default_factory=Counter)
    violations: Counter = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    seen: dict[tuple[str, int], str] = field(default_factory=dict)  # (group, version): digest
    latest: dict[str, int] = field(default_factory=dict)  # resource: highest latestVersion
    # Off from a registry loss until the new history has settled: statuses still show the old
    # one for a while, then the new one starts again at 1, as it must.
    track_latest: bool = True

    def check(self, kind: str, ok: bool, detail: str) -> None:
        """Count a check; a violation seen again at the next poll is the same one."""
        self.checks[kind] += 1
        finding = f"{kind}: {detail}"
        if not ok and finding not in self.details:
            self.violations[kind] += 1
            self.details.append(finding)
            print(f"    VIOLATION {finding}", flush=True)

    def statuses(self, items: dict[str, dict]) -> None:
        if not self.track_latest:
            return
        for name, obj in items.items():
            latest = ((obj.get("status") or {}).get("latestVersion") or {}).get("version")
            if latest is None:
                continue
            before = self.latest.get(name, 0)
            self.check(
                "latest_version_backwards",
                latest >= before,
                f"{name}: status.latestVersion went from {before} to {latest}",
            )
            self.latest[name] = max(before, latest)

    def registry(self, state: State, pipelines: list[Pipeline]) -> None:
        for p in pipelines:
            versions = {v.version: v.artifact_digest for v in state.versions(p.name)}
            digests = Counter(versions.values())
            self.check(
                "one_version_per_artifact",
                max(digests.values(), default=1) == 1,
                f"group {p.name}: {[d[:12] for d, n in digests.items() if n > 1]} registered "
                f"more than once: {versions}",
            )
            for number, sha in versions.items():
                old = self.seen.setdefault((p.name, number), sha)
                self.check(
                    "version_reused",
                    old == sha,
                    f"group {p.name} version {number} was {old[:12]}, now {sha[:12]}",
                )
            lost = [n for (g, n) in self.seen if g == p.name and n not in versions]
            self.check("lost_history", not lost, f"group {p.name} lost versions {lost}")
            expected = {i + 1: digest(m.model_tar) for i, m in enumerate(p.models)}
            self.check(
                "history_as_applied",
                versions == expected,
                f"group {p.name}: versions {_short(versions)}, applied {_short(expected)}",
            )

    def served(self, state: State, pipelines: list[Pipeline]) -> None:
        """Each stage's row serves the version its spec asks for, from a live process."""
        for p in pipelines:
            versions = {v.version: v for v in state.versions(p.name)}
            for stage, wanted in (("staging", p.newest), ("production", p.production)):
                row, want = state.endpoint(p.endpoint(stage)), versions.get(wanted)
                ok = (
                    row is not None
                    and want is not None
                    and row.status == "InService"
                    and row.pending_pid is None
                    and row.model == want.artifact
                    and processes.alive(row.pid, arg=row.model)
                )
                self.check(
                    "serves_spec",
                    ok,
                    f"{p.endpoint(stage)} should serve version {wanted}; row {row}",
                )

    def servers(self, state: State, pipelines: list[Pipeline], local_dir: Path, op: int) -> None:
        """No orphan or duplicate server, no stray endpoint or process. A server being stopped
        gets a few seconds to go before it counts."""
        deadline = time.monotonic() + DYING_GRACE
        while True:
            problems = server_problems(state, pipelines, scan(local_dir), op)
            if not any(problems.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for kind, found in problems.items():
            self.check(kind, not found, "; ".join(found))


def server_problems(
    state: State, pipelines: list[Pipeline], found: list[Proc], operator_pid: int
) -> dict[str, list[str]]:
    rows = [r for r in map(state.endpoint, state.endpoint_names("")) if r is not None]
    tracked = {pid for r in rows for pid in (r.pid, r.pending_pid) if pid}
    live = {p.pid for p in found if p.kind == "serve"}
    expected = {p.endpoint(s) for p in pipelines for s in STAGES}
    per_endpoint = Counter(p.endpoint for p in found if p.kind == "serve" and p.endpoint)
    return {
        "orphan_server": [
            f"pid {p.pid} ({p.cmdline}) is tracked by no row"
            for p in found
            if p.kind == "serve" and p.pid not in tracked
        ],
        "duplicate_server": [
            f"{r.name}: pids {r.pid} and {r.pending_pid} both run ({r.status})"
            for r in rows
            if r.pid in live and r.pending_pid in live
        ]
        + [f"{name}: {n} servers run" for name, n in per_endpoint.items() if n > 1],
        "stray_endpoint": [f"row {r.name}" for r in rows if r.name not in expected],
        "stray_process": [
            f"pid {p.pid} ({p.cmdline})"
            for p in found
            if p.kind in ("operator", "other") and p.pid != operator_pid
        ],
    }


def note_new_servers(local_dir: Path, tracked: set[int], new: dict[int, str]) -> None:
    for proc in scan(local_dir):
        if proc.kind == "serve" and proc.pid not in tracked:
            new[proc.pid] = proc.cmdline


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None

    return {"n": len(ordered), "p50": at(0.5), "p95": at(0.95), "max": at(1.0)}


# -- the run --------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="modeldeploy-chaos-"))
        self.local_dir = self.work / "local"
        self.cp = ControlPlane(self.work / "cp", detach=False)
        self.kc = self.cp.kubeconfig_path
        self.op: OperatorProcess | None = None
        self.inv = Invariants()
        self.pipelines: list[Pipeline] = []
        self.dirty: set[str] = set()  # changed since the last settle: one change each, so the
        # expected history is exactly what was applied
        self.kills = self.restarts = self.unexpected_exits = self.stuck = 0
        self.kill_phases: Counter = Counter()
        self.changes: Counter = Counter()
        self.converge: list[float] = []
        self.converge_busy: list[float] = []  # kills that found a pipeline mid-way
        self.busy_kill = False
        self.last_kill = time.monotonic()
        self.outage: dict[str, Any] = {"ran": False}
        self.registry_loss: dict[str, Any] = {"ran": False}

    # -- plumbing ---------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return kubectl(self.kc, *args, input=input, timeout=60).stdout

    def resources(self) -> dict[str, dict]:
        out = self.kubectl("-n", NS, "get", "mdep", "-o", "json")
        items = {i["metadata"]["name"]: i for i in json.loads(out)["items"]}
        self.inv.statuses(items)
        return items

    def patch(self, p: Pipeline, spec: dict) -> None:
        body = json.dumps({"spec": spec})
        self.kubectl("-n", NS, "patch", "mdep", p.name, "--type", "merge", "-p", body)

    def model(self, index: int) -> TrainResult:
        """A model no other pipeline or version uses: another seed, another split."""
        k = len(self.pipelines[index].models) if index < len(self.pipelines) else 0
        return train(self.work / "models" / f"{index}-{k}", seed=1000 * index + k, progress=False)

    def state(self) -> State:
        return State(self.local_dir / "registry.db", read_only=True)

    def start_operator(self) -> None:
        assert self.op is not None
        self.op.start()

    def passed_since_start(self) -> list[str]:
        """Resources the operator has not made a pass on since it (re)started: its metrics
        start empty and show a resource's phase from its first pass. A kill in steady state is
        settled only once the new process has looked at everything."""
        assert self.op is not None
        try:
            with urllib.request.urlopen(self.op.metrics_url, timeout=5) as response:
                samples = parse_metrics(response.read().decode())
        except OSError:
            return ["the operator's /metrics does not answer yet"]
        seen = {
            dict(labels).get("name")
            for (metric, labels), value in samples.items()
            if metric == "modeldeploy_resource_phase" and value == 1
        }
        return [f"{p.name}: no pass yet" for p in self.pipelines if p.name not in seen]

    def alive_or_restart(self) -> None:
        """An operator that exits without being killed is a finding; it is started again."""
        assert self.op is not None and self.op.proc is not None
        if self.op.proc.poll() is not None:
            self.unexpected_exits += 1
            self.inv.check("operator_exited", False, f"exit {self.op.proc.returncode}")
            print(self.op.tail(30), flush=True)
            self.start_operator()
            self.restarts += 1

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        self.cp.up()
        self.kubectl("apply", "-f", str(CRD_FILE))
        wait_established(kubectl_path(), self.kc, CRD_NAME)
        self.kubectl("create", "namespace", NS)
        env = OPERATOR_ENV | {"MODELDEPLOY_LOCAL_DIR": str(self.local_dir)}
        self.op = OperatorProcess(self.kc, env)
        self.op.log = self.work / "operator.log"
        self.start_operator()
        for i in range(self.args.pipelines):
            self.pipelines.append(Pipeline(f"chaos-{i}", [self.model(i)]))
        for p in self.pipelines:
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump(p.manifest()))
        self.settle("setup", time.monotonic())

    # -- waiting and checking ---------------------------------------------------------------

    def settle(self, what: str, since: float) -> float | None:
        """Wait until every resource serves what its spec asks for, then check every invariant;
        the seconds since `since`, or None when it never settled."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            self.alive_or_restart()
            why = unsettled(self.pipelines, self.resources()) or self.passed_since_start()
            if not why:
                break
            if time.monotonic() > deadline:
                self.stuck += 1
                self.inv.check(
                    "stuck", False, f"{what}: not settled in {SETTLE_TIMEOUT:.0f}s: {why}"
                )
                self.dirty.clear()
                return None
            time.sleep(0.5)
        took = time.monotonic() - since
        self.dirty.clear()
        self.check_all()
        return took

    def check_all(self) -> None:
        assert self.op is not None and self.op.proc is not None
        state = self.state()
        self.inv.registry(state, self.pipelines)
        self.inv.served(state, self.pipelines)
        self.inv.servers(state, self.pipelines, self.local_dir, self.op.proc.pid)

    # -- chaos ------------------------------------------------------------------------------

    def change(self, index: int | None = None, kind: str | None = None) -> str | None:
        """One spec change (a random one unless told) to a pipeline not changed since the last
        settle."""
        free = [i for i, p in enumerate(self.pipelines) if p.name not in self.dirty]
        if index is None:
            if not free:
                return None
            index = self.rng.choice(free)
        p = self.pipelines[index]
        kind = kind or self.rng.choices(["artifact", "rollback", "automatic"], [0.5, 0.3, 0.2])[0]
        if (kind == "rollback" and p.newest < 2) or (kind == "automatic" and p.promoted is None):
            kind = "artifact"
        if kind == "artifact":
            p.models.append(self.model(index))
            self.patch(p, {"model": p.model_spec()})
        elif kind == "rollback":  # or forward, to any version production does not serve
            before = p.production
            p.promoted = self.rng.choice([v for v in range(1, p.newest + 1) if v != before])
            self.patch(p, {"production": {"promotion": "Manual", "promotedVersion": p.promoted}})
            kind = "rollback" if p.promoted < before else "promote"
        else:
            p.promoted = None
            self.patch(p, {"production": {"promotion": "Automatic", "promotedVersion": None}})
        self.dirty.add(p.name)
        self.changes[kind] += 1
        return f"{p.name}: {kind} (staging {p.newest}, production {p.production})"

    def kill(self) -> None:
        """kill -9 at this moment, noting where each unsettled pipeline was; restart."""
        assert self.op is not None
        self.alive_or_restart()
        items = self.resources()
        phases = [
            ((items.get(p.name) or {}).get("status") or {}).get("phase") or "none"
            for p in self.pipelines
            if unsettled([p], items)
        ]
        self.kill_phases.update(phases or ["all settled"])
        self.busy_kill = self.busy_kill or bool(phases)
        self.op.stop(signal.SIGKILL)
        self.kills += 1
        self.last_kill = time.monotonic()
        time.sleep(self.rng.uniform(0, MAX_RESTART_DELAY))
        self.start_operator()
        self.restarts += 1

    def chaos(self) -> None:
        outage_at = self.args.kills // 2
        for n in range(1, self.args.kills + 1):
            if n == outage_at + 1 and not self.outage["ran"]:
                self.api_outage()
            if self.rng.random() < CHANGE_CHANCE:
                change = self.change()
                if change:
                    print(f"  change {change}", flush=True)
            time.sleep(self.rng.uniform(0, MAX_KILL_DELAY))
            self.kill()
            # Never chained into the outage, which starts from settled resources.
            chain = n < self.args.kills and n != outage_at
            if chain and self.rng.random() < CHAINED_KILL_CHANCE:
                print(f"kill {n}: the next one lands in the recovery", flush=True)
                continue
            took = self.settle(f"kill {n}", self.last_kill)
            if took is not None:
                self.converge.append(took)
                if self.busy_kill:
                    self.converge_busy.append(took)
            self.busy_kill = False
            print(f"kill {n}: settled in {took and round(took, 1)}s", flush=True)
            if self.stuck >= 2:
                print("stuck twice: stopping the kills", flush=True)
                break

    # -- an API server outage ---------------------------------------------------------------

    def api_outage(self) -> None:
        """The API server goes away under the running operator while it has work in hand, and
        comes back on the same port; a change made after it must be seen and written."""
        assert self.op is not None and self.op.proc is not None
        pid, seconds = self.op.proc.pid, self.args.outage_seconds
        picks = self.rng.sample(range(len(self.pipelines)), min(2, len(self.pipelines)))
        before, after = picks[0], picks[-1]
        print(f"  outage: change {self.change(before, 'artifact')}", flush=True)
        time.sleep(2.0)
        down = time.monotonic()
        self.cp.down()
        stopped = time.monotonic()
        time.sleep(seconds)
        restarting = time.monotonic()
        self.cp.up()
        up = time.monotonic()
        print(f"  outage: API server back after {up - down:.1f}s", flush=True)
        p = self.pipelines[after]
        if p.name in self.dirty:  # a single pipeline: wait for its first change
            self.settle("outage, first change", up)
        self.change(after, "artifact")
        generation = self.resources()[p.name]["metadata"]["generation"]
        resumed = self.wait_observed(p.name, generation, up)
        settled = self.settle("outage", up)
        alive = self.op.proc is not None and self.op.proc.pid == pid and self.op.proc.poll() is None
        self.inv.check("operator_survives_outage", alive, "the operator did not ride it out")
        self.inv.check("status_after_outage", resumed is not None, "no status written after it")
        self.outage = {
            "ran": True,
            "down_seconds": round(up - down, 1),  # from `down` until `up` answered /readyz
            "down_took_seconds": round(stopped - down, 1),
            "up_took_seconds": round(up - restarting, 1),
            "same_port": not self.cp.notices,
            "operator_kept_running": alive,
            "first_status_after_up_seconds": resumed and round(resumed, 1),
            "settled_after_up_seconds": settled and round(settled, 1),
        }

    def wait_observed(self, name: str, generation: int, since: float) -> float | None:
        """Seconds from `since` until the operator wrote a status for `generation`."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            self.alive_or_restart()
            status = self.resources()[name].get("status") or {}
            if (status.get("observedGeneration") or 0) >= generation:
                return time.monotonic() - since
            time.sleep(0.5)
        return None

    # -- a registry loss --------------------------------------------------------------------

    def modeldeploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_")}
        return subprocess.run(
            [sys.executable, "-m", "modeldeploy", *args],
            capture_output=True,
            text=True,
            env=env | {"KUBECONFIG": str(self.kc)},
            timeout=120,
            check=False,
        )

    def registry_loss_step(self) -> None:
        """registry.db deleted under the running operator: every pass stalls naming
        `modeldeploy local reset` and starts no second server; the reset stops the servers the
        lost registry tracked, and the pipelines converge again on a new history."""
        if self.modeldeploy("local", "reset", "--help").returncode != 0:
            self.registry_loss = {"ran": False, "why": "no `modeldeploy local reset` yet"}
            print("registry loss skipped: `modeldeploy local reset` is not there yet", flush=True)
            return
        for i, p in enumerate(self.pipelines):  # a new history has version 1 only
            if p.promoted is not None:
                self.change(i, "automatic")
        self.settle("before the registry loss", time.monotonic())
        state = self.state()
        rows = [r for r in map(state.endpoint, state.endpoint_names("")) if r is not None]
        tracked = {pid for r in rows for pid in (r.pid, r.pending_pid) if pid}
        self.inv.track_latest = False
        for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
            (self.local_dir / name).unlink(missing_ok=True)
        lost, new = time.monotonic(), {}
        messages = self.wait_stalled(lost, tracked, new)
        new_servers = self.watch_no_new_servers(tracked, new, seconds=15.0)
        reset = self.modeldeploy("local", "reset", "--dir", str(self.local_dir))
        reset_at = time.monotonic()
        left = [pid for pid in tracked if processes.alive(pid)]
        self.inv.check("reset_exit", reset.returncode == 0, reset.stdout + reset.stderr)
        self.inv.check("reset_stops_tracked", not left, f"still running after reset: {left}")
        for p in self.pipelines:
            p.models = [p.models[-1]]  # the spec's artifact is registered again, as version 1
        self.inv.seen.clear()  # version numbers start again at 1
        settled = self.settle("after the registry reset", reset_at)
        self.inv.latest.clear()
        self.inv.track_latest = True
        self.registry_loss = {
            "ran": True,
            "stall_seconds": messages and round(messages[0], 1),
            "stalled_resources": len(messages[1]) if messages else 0,
            "stall_message": messages and next(iter(messages[1].values()), None),
            "servers_started_while_lost": new_servers,
            "reset_exit": reset.returncode,
            "reset_output": (reset.stdout + reset.stderr).strip()[-1000:],
            "tracked_servers_left_after_reset": left,
            "settled_after_reset_seconds": settled and round(settled, 1),
        }

    def wait_stalled(
        self, since: float, tracked: set[int], new: dict[int, str]
    ) -> tuple[float, dict[str, str]] | None:
        """Every resource Stalled (RemoteError) with a message naming the reset command."""
        deadline = time.monotonic() + 120
        messages: dict[str, str] = {}
        while time.monotonic() < deadline:
            self.alive_or_restart()
            note_new_servers(self.local_dir, tracked, new)
            items = self.resources()
            messages = {}
            for p in self.pipelines:
                conds = (items[p.name].get("status") or {}).get("conditions") or []
                stalled = next((c for c in conds if c.get("type") == "Stalled"), {})
                if stalled.get("status") == "True" and stalled.get("reason") == "RemoteError":
                    messages[p.name] = stalled.get("message", "")
            if len(messages) == len(self.pipelines):
                break
            time.sleep(0.5)
        # The cause first (before the parenthesis), then the way out.
        named = all(
            "local registry" in m.split("(", 1)[0] and "modeldeploy local reset" in m
            for m in messages.values()
        )
        full = len(messages) == len(self.pipelines)
        self.inv.check("stall_on_registry_loss", full and named, f"stalled: {messages}")
        return (time.monotonic() - since, messages) if full else None

    def watch_no_new_servers(
        self, tracked: set[int], new: dict[int, str], seconds: float
    ) -> list[str]:
        """While the registry is lost no server may start beside the ones it tracked."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            note_new_servers(self.local_dir, tracked, new)
            time.sleep(0.5)
        found = [f"pid {pid}: {cmd}" for pid, cmd in new.items()]
        self.inv.check("no_server_while_lost", not found, "; ".join(found))
        return found

    # -- the end ----------------------------------------------------------------------------

    def stop_everything(self) -> None:
        """By pid, whatever happened: the operator, every server its rows track, any other
        process naming our local dir, then the control plane."""
        if self.op is not None:
            self.op.stop()
        try:
            state = self.state()
            rows = [r for r in map(state.endpoint, state.endpoint_names("")) if r is not None]
        except Exception:  # a registry lost and not reset: the scan below finds them
            rows = []
        for r in rows:
            processes.stop(r.pending_pid, arg=r.pending_model or "", grace=5.0)
            processes.stop(r.pid, arg=r.model, grace=5.0)
        for proc in scan(self.local_dir):
            print(f"stopping pid {proc.pid}, left running: {proc.cmdline}", flush=True)
            processes.stop(proc.pid, grace=5.0)
        self.cp.down(purge=True)

    def results(self, wall: float, final_ok: bool) -> dict[str, Any]:
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
            "seed": self.args.seed,
            "pipelines": self.args.pipelines,
            "kills": self.kills,
            "restarts": self.restarts,
            "unexpected_operator_exits": self.unexpected_exits,
            "kills_by_phase": dict(self.kill_phases.most_common()),
            "spec_changes": dict(self.changes),
            "invariant_checks": sum(self.inv.checks.values()),
            "invariant_checks_by_kind": dict(sorted(self.inv.checks.items())),
            "violations": sum(self.inv.violations.values()),
            "violations_by_kind": dict(sorted(self.inv.violations.items())),
            "violation_details": self.inv.details[:50],
            "converge_after_kill_seconds": percentiles(self.converge),
            "converge_after_kill_mid_pipeline_seconds": percentiles(self.converge_busy),
            "api_outage": self.outage,
            "registry_loss": self.registry_loss,
            "final_all_ready": final_ok,
            "wall_seconds": round(wall, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--outage-seconds", type=float, default=20.0)
    parser.add_argument("--skip-registry-loss", action="store_true")
    args = parser.parse_args()
    start, run, final_ok = time.monotonic(), Run(args), False
    print(
        f"chaos run: {args.kills} kills, {args.pipelines} pipelines, seed {args.seed}; {run.work}"
    )
    try:
        run.setup()
        run.chaos()
        if not args.skip_registry_loss:
            run.registry_loss_step()
        final_ok = run.settle("final", time.monotonic()) is not None
    finally:
        log = run.op.log if run.op else None
        run.stop_everything()
    result = run.results(time.monotonic() - start, final_ok)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    if result["violations"] or not final_ok:
        print(f"kept for a look: {run.work} (operator log {log})")
        return 1
    shutil.rmtree(run.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
