#!/usr/bin/env bash
# Copies crds/modeldeployment.yaml and crds/kopf-peering.yaml (the sources of truth) to where the
# deploy artifacts need them: Helm reads CRDs only from inside the chart.
# tests/test_deploy_artifacts.py fails when a copy differs; run this after changing the CRD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for dest in helm/modeldeploy/crds; do
    mkdir -p "$root/$dest"
    for crd in modeldeployment.yaml kopf-peering.yaml; do
        cp "$root/crds/$crd" "$root/$dest/$crd"
    done
done
