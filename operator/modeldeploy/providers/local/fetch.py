"""Fetch a model artifact and verify its sha256: the init container of in-cluster endpoints.

    python -m modeldeploy.providers.local.fetch --source URI --sha256 HEX --dest PATH

The source is the s3:// URI the version was registered from (plain http(s):// is read too, as
the tests do, but the spec admits no such artifact). The operator inspected these exact bytes
when it registered the version (one native xgboost member, no pickle, safe tar) and recorded
their digest; an endpoint pod cannot read the operator's store, so it downloads the artifact
again from its source and serves it only if the digest matches. Nothing is left at `dest`
unless it does. Exit status 0 or 1; the error is the last line on stderr, which the kubelet
keeps as the termination message.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from modeldeploy.artifacts.package import MAX_ARTIFACT

CHUNK = 1 << 20
SCHEMES = ("s3", "http", "https")


class FetchError(Exception):
    pass


def _copy(src: BinaryIO, out: BinaryIO) -> str:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        size += len(chunk)
        if size > MAX_ARTIFACT:
            raise FetchError(f"artifact is over {MAX_ARTIFACT} bytes")
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def _download(source: str, out: BinaryIO) -> str:
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        import boto3  # honours AWS_ENDPOINT_URL and the pod's credentials (IRSA)

        body = boto3.client("s3").get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        with body["Body"] as stream:
            return _copy(stream, out)
    if parsed.scheme in ("http", "https"):
        with urllib.request.urlopen(source, timeout=60) as resp:
            return _copy(resp, out)
    raise FetchError(f"unsupported source scheme {parsed.scheme!r} (expected one of {SCHEMES})")


def fetch(source: str, sha256: str, dest: Path) -> None:
    """Download `source` to `dest` atomically, or raise FetchError and leave nothing there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with open(part, "wb") as out:
            got = _download(source, out)
        if got != sha256.lower():
            raise FetchError(f"sha256 mismatch for {source}: expected {sha256}, got {got}")
        os.replace(part, dest)
    except FetchError:
        raise
    except Exception as err:  # network, S3 and HTTP errors: one readable line for the pod
        raise FetchError(f"{source}: {type(err).__name__}: {err}") from err
    finally:
        part.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy.providers.local.fetch")
    parser.add_argument("--source", required=True, help="s3:// URI of the artifact")
    parser.add_argument("--sha256", required=True, help="expected digest (hex)")
    parser.add_argument("--dest", required=True, type=Path, help="where to write the artifact")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        fetch(args.source, args.sha256, args.dest)
    except FetchError as err:
        print(f"fetch: {err}", file=sys.stderr)
        return 1
    print(f"fetch: {args.source} -> {args.dest} (sha256 {args.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
