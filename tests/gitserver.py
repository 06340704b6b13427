"""A git server for GitOps engines: bare repositories served over git's smart HTTP protocol
(`git http-backend` behind a loopback HTTP server), and a working copy that commits and pushes.

Flux's go-git needs the smart protocol (over dumb HTTP it fails with "unexpected EOF"), and
Argo CD's repo-server runs the git CLI: both fetch from `GitServer.url(repo)`.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

GIT = shutil.which("git") or "git"
IDENTITY = {
    "GIT_AUTHOR_NAME": "fleet",
    "GIT_AUTHOR_EMAIL": "fleet@example.com",
    "GIT_COMMITTER_NAME": "fleet",
    "GIT_COMMITTER_EMAIL": "fleet@example.com",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    done = subprocess.run(
        [GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout.strip()


class _Backend(BaseHTTPRequestHandler):
    """One request through `git http-backend` (CGI): its headers, then its body."""

    protocol_version = "HTTP/1.0"  # the answer ends with the connection: no length to know
    server: _Server

    def log_message(self, *_: object) -> None:
        pass

    def _cgi(self) -> None:
        where = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": where.path,
            "QUERY_STRING": where.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        for header in ("Git-Protocol", "Content-Encoding"):
            if value := self.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = value
        done = subprocess.run(
            [GIT, "http-backend"], input=body, env=env, capture_output=True, timeout=60, check=False
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, done.stderr.decode()[:200])
            return
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((v.strip() for k, v in headers if k.lower() == "status"), "200 OK")
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _cgi


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.root = root
        super().__init__(("127.0.0.1", 0), _Backend)


class GitServer:
    """Bare repositories under `root`, served on a loopback port of its own choosing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._server = _Server(root)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> GitServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    def create(self, repo: str, workdir: Path) -> WorkingCopy:
        """A new bare repository `repo` (branch main) and a working copy that pushes to it."""
        bare = self.root / repo
        bare.mkdir(parents=True)
        git(bare, "init", "--quiet", "--bare", "--initial-branch=main")
        workdir.mkdir(parents=True)
        git(workdir, "init", "--quiet", "--initial-branch=main")
        git(workdir, "remote", "add", "origin", str(bare))
        return WorkingCopy(workdir)


class WorkingCopy:
    def __init__(self, path: Path) -> None:
        self.path = path

    def commit(self, message: str, files: dict[str, str | None]) -> str:
        """Writes (or, for None, deletes) the files, commits, pushes; the new commit's sha."""
        for name, text in files.items():
            target = self.path / name
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.path, "push", "--quiet", "origin", "main")
        return git(self.path, "rev-parse", "HEAD")
