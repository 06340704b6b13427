#!/usr/bin/env bash
# Copies crds/modeldeployment.yaml (the source of truth) to where the deploy artifacts need it:
# Helm reads CRDs only from inside the chart.
# tests/test_deploy_artifacts.py fails when a copy differs; run this after changing the CRD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for dest in helm/modeldeploy/crds; do
    mkdir -p "$root/$dest"
    cp "$root/crds/modeldeployment.yaml" "$root/$dest/modeldeployment.yaml"
done
