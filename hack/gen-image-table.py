"""Write (or --check) operator/modeldeploy/artifacts/xgboost_images.json: the first-party
XGBoost image URI of every region and framework version we know, from sagemaker-core's
offline table. The operator reads the file instead of importing sagemaker-core (over two
seconds of CPU and ~90 MiB) at its first registration; a region or version the file lacks
is still looked up through sagemaker-core in a child process.

    .venv/bin/python hack/gen-image-table.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

from sagemaker.core import image_uris

from modeldeploy.artifacts.compat import IMAGE_TABLE, IMAGE_XGBOOST

CONFIG = Path(image_uris.__file__).parent / "image_uri_config" / "xgboost.json"


def table() -> dict:
    config = json.loads(CONFIG.read_text())["inference"]["versions"]
    regions = sorted({r for v in IMAGE_XGBOOST for r in config.get(v, {}).get("registries", {})})
    images: dict[str, dict[str, str]] = {}
    for region in regions:
        for framework in IMAGE_XGBOOST:
            try:
                uri = image_uris.retrieve("xgboost", region, framework)
            except ValueError:
                continue
            images.setdefault(region, {})[framework] = uri
    return {"source": f"sagemaker-core {version('sagemaker-core')}", "images": images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args()
    text = json.dumps(table(), indent=1, sort_keys=True) + "\n"
    if args.check:
        if IMAGE_TABLE.read_text() != text:
            print(f"{IMAGE_TABLE} is stale: run hack/gen-image-table.py", file=sys.stderr)
            return 1
        return 0
    IMAGE_TABLE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
