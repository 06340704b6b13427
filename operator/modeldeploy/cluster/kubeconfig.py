"""Kubeconfig files for the local control plane: its CA and one user's client certificate."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from modeldeploy.cluster.pki import CertPair

CLUSTER_NAME = "modeldeploy-local"
LOOPBACK = "127.0.0.1"


def write_kubeconfig(
    path: Path, host: str, port: int, ca: Path, client: CertPair, user: str
) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": f"https://{host}:{port}",
                    "certificate-authority-data": b64(ca),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert),
                    "client-key-data": b64(client.key),
                },
            }
        ],
        "contexts": [
            {"name": f"{user}@{CLUSTER_NAME}", "context": {"cluster": CLUSTER_NAME, "user": user}}
        ],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds a private key
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    tmp.replace(path)
