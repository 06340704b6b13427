"""`serve_main`: load and check the model, listen, then serve in this process or in workers.

With several workers the parent binds one listening socket and starts each worker as a fresh
interpreter (`python -m modeldeploy.serving.workers`) that inherits the socket: no fork after
xgboost and OpenMP are loaded (fork-unsafe), one event loop and one xgboost thread per
process, and the kernel hands each new connection to whichever worker accepts it first. The
parent only supervises: it restarts a worker that dies, and on SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from modeldeploy.serving import accept, metrics, server
from modeldeploy.serving.limits import Limits
from modeldeploy.serving.model import ModelLoadError, load_model

log = logging.getLogger("modeldeploy.serving")

READY_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0
# More worker deaths than this within the window means something is wrong: give up.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s modeldeploy-serve[%(process)d] %(levelname)s %(message)s",
        )


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, even by SIGKILL, so that no
    orphan keeps the port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(0)


def serve_main(
    model: Path, port: int | None = None, host: str = "127.0.0.1", workers: int = 1
) -> int:
    """Serve `model` on host:port until SIGTERM/SIGINT; the exit code for the CLI.

    `model` is a model.tar.gz, an extracted xgboost-model, or a directory holding either.
    `port` None means SAGEMAKER_BIND_TO_PORT, else 8080. Returns 2 when the model, the
    settings or the address are refused at startup (with the reason on stderr), 1 when workers
    keep dying, 0 after a clean stop.
    """
    _setup_logging()
    try:
        max_body = server.max_content_length()
        limits = Limits.from_env()
        port = server.default_port() if port is None else port
    except ValueError as exc:
        log.error("modeldeploy serve: %s", exc)
        return 2
    if workers < 1:
        log.error("modeldeploy serve: --workers must be at least 1, got %d", workers)
        return 2
    try:
        loaded = load_model(Path(model))
    except ModelLoadError as exc:
        log.error("modeldeploy serve: cannot serve the model: %s", exc)
        return 2
    try:
        sock = server.listen(host, port)
    except OSError as exc:
        log.error("modeldeploy serve: cannot listen on %s:%d: %s", host, port, exc)
        return 2
    bound = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    info = loaded.info
    banner = (
        f"serving {model} (xgboost {info.version_str} {info.format.upper()}, "
        f"{loaded.num_feature} features, {info.objective}) on http://{url_host}:{bound} "
        f"with {workers} worker{'s' if workers > 1 else ''}"
    )
    if workers == 1:
        with sock:
            server.run(
                loaded, sock, max_body, on_ready=lambda: log.info("%s", banner), limits=limits
            )
        log.info("stopped")
        return 0
    del loaded  # each worker loads its own copy; the parent only checked it
    return _Supervisor(Path(model), sock, workers, banner).run()


class _Supervisor:
    def __init__(self, model: Path, sock: socket.socket, workers: int, banner: str) -> None:
        self.model = model
        self.sock = sock
        self.count = workers
        self.banner = banner
        self.board_fd = accept.create_board(workers)
        # Every worker counts its requests in its slot; any of them answers /metrics for all.
        self.metrics_fd = metrics.create_serve_board(workers)
        self.children: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}  # pid -> (slot, child)
        self.deaths: list[float] = []
        self.stopping = False

    def _start(self, slot: int) -> tuple[subprocess.Popen[bytes], int]:
        """Start the worker for `slot`; returns it and the read end of its ready pipe."""
        read_fd, write_fd = os.pipe()
        fd = self.sock.fileno()
        command = [
            sys.executable,
            "-m",
            "modeldeploy.serving.workers",
            "--model",
            str(self.model),
            "--listen-fd",
            str(fd),
            "--ready-fd",
            str(write_fd),
            "--workers",
            str(self.count),
            "--parent",
            str(os.getpid()),
            "--board-fd",
            str(self.board_fd),
            "--slot",
            str(slot),
            "--metrics-fd",
            str(self.metrics_fd),
        ]
        accept.clear_slot(self.board_fd, slot)
        try:
            fds = (fd, write_fd, self.board_fd, self.metrics_fd)
            child = subprocess.Popen(command, pass_fds=fds)
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.children[child.pid] = (slot, child)
        return child, read_fd

    def _spawn(self, slots: list[int]) -> None:
        """Start workers in parallel and wait until each one serves."""
        started = [self._start(slot) for slot in slots]
        for child, read_fd in started:
            self._await_ready(child, read_fd)

    def _await_ready(self, child: subprocess.Popen[bytes], read_fd: int) -> None:
        """Wait for the worker's ready byte; a worker that exits first failed to start."""
        try:
            ready, _, _ = select.select([read_fd], [], [], READY_TIMEOUT_SECONDS)
            if ready and os.read(read_fd, 1) == b"1":
                return
        finally:
            os.close(read_fd)
        child.kill()
        code = child.wait()
        raise RuntimeError(f"worker {child.pid} failed to start (exit code {code})")

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        try:
            self._spawn(list(range(self.count)))
            log.info("%s", self.banner)
            while not self.stopping:
                select.select([wake_r], [], [], 1.0)
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                if not self.stopping and not self._reap_and_restart():
                    return 1
            return 0
        except RuntimeError as exc:
            log.error("modeldeploy serve: %s", exc)
            return 1
        finally:
            self._stop_all()
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            os.close(self.board_fd)
            os.close(self.metrics_fd)
            self.sock.close()

    def _reap_and_restart(self) -> bool:
        for pid, (slot, child) in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            del self.children[pid]
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW_SECONDS]
            self.deaths.append(now)
            if len(self.deaths) > MAX_RESTARTS:
                log.error(
                    "modeldeploy serve: workers died %d times in %.0f s; giving up",
                    len(self.deaths),
                    RESTART_WINDOW_SECONDS,
                )
                return False
            log.warning("worker %d exited with code %s; starting another", pid, code)
            self._spawn([slot])
        return True

    def _stop_all(self) -> None:
        for _, child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for _, child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", child.pid)
                child.kill()
                child.wait()
        self.children.clear()
        log.info("stopped")


def _worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modeldeploy.serving.workers")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--listen-fd", required=True, type=int)
    parser.add_argument("--ready-fd", required=True, type=int)
    parser.add_argument("--workers", required=True, type=int)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--board-fd", required=True, type=int)
    parser.add_argument("--slot", required=True, type=int)
    parser.add_argument("--metrics-fd", required=True, type=int)
    args = parser.parse_args(argv)
    _setup_logging()
    _die_with_parent(args.parent)
    try:
        model = load_model(args.model)
    except ModelLoadError as exc:
        log.error("worker cannot load the model: %s", exc)
        return 2
    sock = socket.socket(fileno=args.listen_fd)

    def ready() -> None:
        os.write(args.ready_fd, b"1")
        os.close(args.ready_fd)

    board = accept.ConnectionBoard(args.board_fd, args.slot)
    server.run(
        model,
        sock,
        server.max_content_length(),
        workers=args.workers,
        on_ready=ready,
        board=board,
        metrics=metrics.ServeMetrics(args.metrics_fd, args.slot),
    )
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
