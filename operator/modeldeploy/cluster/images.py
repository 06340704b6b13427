"""Images for the local node, which pulls from no registry: a one-layer OCI archive for the pod
sandbox (`pause`), and `ctr images import` of OCI archives into containerd's Kubernetes
namespace, where pods find them with `imagePullPolicy: Never`."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

PAUSE_IMAGE = "localhost/pause:3.10"
NAME_ANNOTATION = "io.containerd.image.name"  # what `ctr images import` names the image by
CRI_NAMESPACE = "k8s.io"


def _blob(layout: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(files: dict[str, Path]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in files.items():
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0  # the same binary gives the same digest
            info.mode = 0o755
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return out.getvalue()


def write_single_binary_image(binary: Path, name: str, out: Path, user: str = "65535") -> Path:
    """An OCI archive whose only content is `binary` as `/<its name>`, its entrypoint."""
    layer = _layer({binary.name: binary})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [f"/{binary.name}"], "User": user},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    with tarfile.open(out, "w") as layout:
        layer_ref = _blob(layout, layer)
        config_ref = _blob(layout, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_ref}],
        }
        manifest_ref = _blob(layout, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_ref,
                    "annotations": {NAME_ANNOTATION: name},
                }
            ],
        }
        for member, body in (
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", index),
        ):
            data = json.dumps(body).encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            layout.addfile(info, io.BytesIO(data))
    return out


def import_image(ctr: list[str], archive: Path) -> list[str]:
    """Import an OCI archive (`podman save --format oci-archive`, or the above) into containerd
    for the kubelet; the names it was imported as."""
    proc = subprocess.run(
        [*ctr, "-n", CRI_NAMESPACE, "images", "import", "--no-unpack=false", str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive}: {proc.stderr.strip()}")
    # "unpacking <name> (sha256:…)...done" per image
    return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("unpacking ")]
