"""`make demo-cluster`: the seed pipeline with everything in pods on a real node.

    .venv/bin/python hack/demo_cluster.py up   [--state-dir .cache/demo-cluster]
    .venv/bin/python hack/demo_cluster.py down [--state-dir .cache/demo-cluster]

`up` starts a control plane with a real node (`modeldeploy cluster up --with-node`, root and
containerd), loads the operator image built by `make image` into it, installs the Helm chart
with the local provider hosting endpoints as Deployments, and runs the seed model through
staging and production: the operator, the staging endpoint and the production endpoint are
all pods. The local provider in a cluster reads s3:// artifacts, so the AWS emulator (moto)
holds them, listening on the node's address where pods reach it. The local registry lives on a
hostPath PersistentVolume under the state directory.

`down` deletes the ModelDeployment (the operator removes its endpoints), uninstalls the chart,
stops the emulator by its recorded pid, and stops the cluster, which puts the host back.
`make demo` stays the fast one (processes on this machine, no root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BOLD, GREEN, NAMESPACE, NO_PROXY, RED, RESET, ROOT, Demo, run

from modeldeploy import __version__, processes
from modeldeploy.cluster.pki import NODE_IP

RELEASE = "modeldeploy"
SYSTEM_NS = "modeldeploy-system"
BUCKET = "demo-artifacts"
IMAGE = f"localhost/modeldeploy:{__version__}"
AWS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_REGION": "us-east-1"}


class ClusterDemo(Demo):
    def __init__(self, state: Path) -> None:
        super().__init__(state)
        self.emulator_pid = self.state / "emulator.pid"
        self.emulator_log = self.state / "emulator.log"
        self.volume = self.state / "local-state"

    def helm(self, *args: str) -> str:
        helm = self.run(ROOT / "hack" / "build-helm.sh").strip().splitlines()[-1]
        home = self.state / "helm-home"
        env = {v: str(home / v.lower()) for v in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME")}
        return self.run(helm, f"--kubeconfig={self.kubeconfig}", *args, env=env)

    def up(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        with self.step("Building the operator image (make image; cached)"):
            archive = self.run(ROOT / "hack" / "build-image.sh").strip().splitlines()[-1]
        with self.step("Starting a control plane and a real node (containerd, kubelet, CoreDNS)"):
            out = self.modeldeploy(
                "cluster",
                "up",
                "--with-node",
                "--image",
                archive,
                "--state-dir",
                str(self.state / "cluster"),
            )
            print("    " + "\n    ".join(out.strip().splitlines()[:4]))
        with self.step("Starting the AWS emulator (S3 for the artifacts) on the node's address"):
            endpoint = self.start_emulator()
        with self.step("Training an XGBoost model and uploading it to S3"):
            self.modeldeploy("train", "--output", str(self.model_dir), "--quiet")
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="demo",
                aws_secret_access_key="demo",
            )
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=BUCKET)
            for name in ("model.tar.gz", "evaluation.json"):
                s3.upload_file(str(self.model_dir / name), BUCKET, f"seed/{name}")
        with self.step("helm install the chart: the operator pod, endpoints as Deployments"):
            self.install_chart(endpoint)
        with self.step("Applying the ModelDeployment (manifests/examples/local.yaml, s3://)"):
            self.apply_example()
        with self.step("Watching it move to staging (a serve pod)", None):
            self.watch(until=("AwaitingPromotion",), timeout=240)
        with self.step("Sending the held-out rows to the staging pod through its Service"):
            self.score(self.service_url("staging"))
        with self.step("Approving promotion: spec.production.promotedVersion = 1"):
            patch = json.dumps({"spec": {"production": {"promotedVersion": 1}}})
            self.kubectl("-n", NAMESPACE, "patch", "mdep", self.name, "--type=merge", "-p", patch)
            self.watch(until=("Deployed",), timeout=240)
        with self.step("Production answers from its pod"):
            self.score(self.service_url("production"), rows=3)
        print(f"\n{GREEN}{BOLD}Production reached in {self.elapsed().strip()}.{RESET}\n")
        print(self.kubectl("get", "pods", "-A", "-o", "wide"))
        print(self.kubectl("-n", NAMESPACE, "get", "mdep"))
        print(f"export KUBECONFIG={self.kubeconfig}   # kubectl: {self._kubectl}")
        print("Stop everything: make down")

    def start_emulator(self) -> str:
        (port,) = processes.free_ports(1)
        with open(self.emulator_log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", NODE_IP, "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.emulator_pid.write_text(str(processes.keep(proc)))
        url = f"http://{NODE_IP}:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                NO_PROXY.open(f"{url}/moto-api/data.json", timeout=2).close()
                return url
            time.sleep(0.3)
        raise RuntimeError(f"the emulator did not answer on {url}; see {self.emulator_log}")

    def install_chart(self, endpoint: str) -> None:
        self.volume.mkdir(exist_ok=True)
        os.chown(self.volume, 65532, 65532)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "demo-local-state"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "node-local",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(self.volume), "type": "Directory"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(pv))
        for ns in (SYSTEM_NS, NAMESPACE):
            with contextlib.suppress(RuntimeError):
                self.kubectl("create", "namespace", ns)
        env = [{"name": k, "value": v} for k, v in AWS.items() if k != "AWS_REGION"]
        repository, tag = IMAGE.rsplit(":", 1)
        values = {
            "provider": "local",
            "pollSeconds": 2,
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "extraEnv": [*env, {"name": "AWS_ENDPOINT_URL", "value": endpoint}],
            "local": {
                "hosting": "kubernetes",
                "endpointNamespace": NAMESPACE,
                "endpointEnv": env,
                "persistence": {"enabled": True, "storageClassName": "node-local"},
            },
        }
        path = self.state / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        self.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(ROOT / "helm" / "modeldeploy"),
            "--namespace",
            SYSTEM_NS,
            "--values",
            str(path),
            "--wait",
            "--timeout",
            "180s",
        )
        print("    " + self.kubectl("-n", SYSTEM_NS, "get", "pods").strip().replace("\n", "\n    "))

    def apply_example(self) -> None:
        doc = yaml.safe_load((ROOT / "manifests" / "examples" / "local.yaml").read_text())
        doc["metadata"]["namespace"] = NAMESPACE
        doc["spec"]["model"]["artifact"] = f"s3://{BUCKET}/seed/model.tar.gz"
        doc["spec"]["model"]["metrics"] = f"s3://{BUCKET}/seed/evaluation.json"
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def service_url(self, stage: str) -> str:
        """The endpoint's Service by its ClusterIP (kube-proxy answers it on this machine;
        the status' URL is the in-cluster name, which CoreDNS resolves for pods)."""
        name = self.resource()["status"][stage]["endpointName"].lower()
        ip = self.kubectl("-n", NAMESPACE, "get", "svc", name, "-o", "jsonpath={.spec.clusterIP}")
        return f"http://{ip}:8080/invocations"

    def down(self) -> None:
        if self.kubeconfig.exists():
            with contextlib.suppress(Exception):
                self.kubectl("-n", NAMESPACE, "delete", "mdep", "--all", "--timeout=60s")
            with contextlib.suppress(Exception):
                self.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait")
        if self.emulator_pid.exists():
            pid = int(self.emulator_pid.read_text() or 0)
            processes.stop(pid, arg="moto.server", grace=5.0)
            self.emulator_pid.unlink()
        if (self.state / "cluster").exists():
            out = self.modeldeploy("cluster", "down", "--state-dir", str(self.state / "cluster"))
            print(out.strip())
        print("demo-cluster stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state-dir", default=str(ROOT / ".cache" / "demo-cluster"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(f"{RED}make demo-cluster needs root (a real kubelet and containerd){RESET}")
        return 1
    return run(ClusterDemo(Path(args.state_dir)), args.action)


if __name__ == "__main__":
    sys.exit(main())
