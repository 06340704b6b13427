"""Package and safely read SageMaker XGBoost `model.tar.gz` artifacts.

SageMaker's first-party XGBoost container loads every non-dot file in the model directory and
ensembles them, so an artifact holds exactly one regular file, `xgboost-model`. Artifacts are
untrusted input: we never extract blindly, never follow links, and never unpickle.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

MODEL_MEMBER = "xgboost-model"
MAX_MODEL_BYTES = 512 * 1024 * 1024
# The largest model.tar.gz any provider downloads, stores or fetches into a pod.
MAX_ARTIFACT = 2 << 30
# A valid artifact has one file (and maybe a `.` entry); bound the work spent on hostile ones.
MAX_MEMBERS = 16


class UnsafeArtifactError(ValueError):
    """The artifact is malformed or could write/read outside what we allow."""


def write_model_tar(model_file: Path, out_tar: Path) -> None:
    """Write `out_tar` (gzip tar) holding `model_file` as the single member `xgboost-model`."""
    data = Path(model_file).read_bytes()
    info = tarfile.TarInfo(MODEL_MEMBER)
    info.size = len(data)
    info.mode = 0o644
    # Fixed metadata so the same model bytes give the same tar (stable digests for registration).
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    out_tar = Path(out_tar)
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_tar.with_name(out_tar.name + ".tmp")
    # mtime=0 in the gzip header too, for the same reason.
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out_tar)


def _check_name(name: str) -> None:
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifactError(f"model.tar.gz member {name!r} has an absolute path; refused")
    if ".." in path.parts or "\\" in name:
        raise UnsafeArtifactError(f"model.tar.gz member {name!r} escapes the archive; refused")


def _model_member(tar: tarfile.TarFile, max_bytes: int) -> tarfile.TarInfo:
    """Validate every member and return the single regular file."""
    regular: list[tarfile.TarInfo] = []
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise UnsafeArtifactError(f"model.tar.gz has more than {MAX_MEMBERS} entries; refused")
        _check_name(member.name)
        if member.issym() or member.islnk():
            raise UnsafeArtifactError(
                f"model.tar.gz member {member.name!r} is a link to {member.linkname!r}; "
                "links are refused"
            )
        if member.isdir():
            continue
        if not member.isreg():
            raise UnsafeArtifactError(
                f"model.tar.gz member {member.name!r} is not a regular file "
                "(device, fifo or other special file); refused"
            )
        regular.append(member)
        if len(regular) > 1:
            names = ", ".join(m.name for m in regular)
            raise UnsafeArtifactError(
                f"model.tar.gz holds more than one file ({names}); the SageMaker XGBoost "
                f"container would ensemble them all, so exactly one ({MODEL_MEMBER}) is allowed"
            )
        if member.size > max_bytes:
            raise UnsafeArtifactError(
                f"model.tar.gz member {member.name!r} is {member.size} bytes, "
                f"over the {max_bytes}-byte limit"
            )
    if not regular:
        raise UnsafeArtifactError(f"model.tar.gz holds no model file (expected {MODEL_MEMBER})")
    name = regular[0].name.removeprefix("./")
    if name != MODEL_MEMBER:
        raise UnsafeArtifactError(
            f"model.tar.gz holds {regular[0].name!r}; the SageMaker XGBoost container expects "
            f"a single top-level file named {MODEL_MEMBER}"
        )
    return regular[0]


def _open(tar_path: Path) -> tarfile.TarFile:
    with open(tar_path, "rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        raise UnsafeArtifactError(f"{tar_path} is not a gzip-compressed tar (model.tar.gz)")
    try:
        return tarfile.open(tar_path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UnsafeArtifactError(f"{tar_path} is not a readable gzip tar: {exc}") from exc


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, max_bytes: int) -> bytes:
    f = tar.extractfile(member)
    if f is None:  # pragma: no cover - only regular files reach here
        raise UnsafeArtifactError(f"cannot read model.tar.gz member {member.name!r}")
    # Read one byte past the limit: the header's size is checked, this guards the stream too.
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeArtifactError(f"model.tar.gz member {member.name!r} is over {max_bytes} bytes")
    return data


def _verify_gzip(tar_path: Path, max_bytes: int) -> None:
    """Decompress the whole stream (bounded), so that a bad CRC or a corrupt tail after the
    tar's last member is refused too: tarfile stops reading before the gzip trailer."""
    cap = max_bytes + (1 << 20)  # the member, its headers and padding
    total = 0
    with gzip.open(tar_path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
            if total > cap:
                raise UnsafeArtifactError(
                    f"{tar_path} decompresses to over {cap} bytes (the model size limit)"
                )


def read_model_member(tar_path: Path, max_bytes: int = MAX_MODEL_BYTES) -> bytes:
    """Return the bytes of the single model file in `tar_path`, without touching the disk."""
    try:
        with _open(Path(tar_path)) as tar:
            member = _model_member(tar, max_bytes)
            data = _read(tar, member, max_bytes)
        _verify_gzip(Path(tar_path), max_bytes)
        return data
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # zlib.error: a corrupt deflate stream. Corrupt input fails the same way every time.
        raise UnsafeArtifactError(f"{tar_path} is a corrupt gzip tar: {exc}") from exc


def safe_extract(tar_path: Path, dest: Path, max_bytes: int = MAX_MODEL_BYTES) -> Path:
    """Write the single model file of `tar_path` to `dest/xgboost-model`; return its path.

    The file is always written under the fixed name, whatever the member is called, so no
    member name ever becomes a filesystem path.
    """
    data = read_model_member(tar_path, max_bytes)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / MODEL_MEMBER
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".xgboost-model.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_file(uri: str, limit: int, what: str, error: type[Exception]) -> Path:
    """The regular file a file:// `uri` names, of at most `limit` bytes; otherwise the caller's
    `error` with "URI: no such file", "URI: is a directory, not a file" (and the like) or
    "URI: WHAT is over LIMIT bytes"."""
    path = Path(urlparse(uri).path)
    if path.is_dir():
        raise error(f"{uri}: is a directory, not a {what} file")
    if not path.exists():
        raise error(f"{uri}: no such file")
    if not path.is_file():
        raise error(f"{uri}: is not a regular file (device, fifo or socket)")
    if path.stat().st_size > limit:
        raise error(f"{uri}: {what} is over {limit} bytes")
    return path
