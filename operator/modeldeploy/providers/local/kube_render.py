"""The objects the local provider writes to a cluster for an endpoint: a Deployment and a Service,
and what the Deployment's status says back about its rollout.

Pure functions of `Settings` and their arguments; nothing here talks to the API. The pods run
the same `modeldeploy serve` as the process backend, from the operator's image. A pod cannot
read the operator's artifact store, so an init container downloads the artifact from the
version's source (s3:// or http(s)://) and checks it against the digest the operator recorded
when it inspected and registered those bytes (`modeldeploy.providers.local.fetch`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy import __version__
from modeldeploy.providers.errors import TerminalError

PORT = 8080
MODEL_PATH = "/models/model.tar.gz"
UID = 65532  # the image's non-root user
MANAGED_BY = "app.kubernetes.io/managed-by"
ENDPOINT_LABEL = "modeldeploy.dev/endpoint"
CONFIG_KEY = "modeldeploy.dev/config"  # label and annotation of the pod template
NAME_ANNOTATION = "modeldeploy.dev/endpoint-name"
# The Deployment's own bookkeeping, so a restarted operator picks up where it was.
IN_SERVICE = "modeldeploy.dev/in-service-config"  # the config whose rollout last completed
PREVIOUS = "modeldeploy.dev/previous"  # replicas and template to roll back to, during an update
FAILURE = "modeldeploy.dev/failure-reason"
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Non-secret settings the init container needs to reach S3 as the operator does. Credentials
# come from the endpoint pods' own identity (IRSA) or MODELDEPLOY_ENDPOINT_ENV, never copied.
PASSTHROUGH_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
URL_TEMPLATE = "http://{service}.{namespace}.svc:8080/invocations"


# -- settings ------------------------------------------------------------------------------------


def default_namespace() -> str:
    """The operator's own namespace in a pod (the one file read here), else "default"."""
    try:
        return SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _json_env(environ: Mapping[str, str], var: str, default: Any) -> Any:
    text = environ.get(var)
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError as err:
        raise TerminalError(f"{var} is not valid JSON: {err}") from err


@dataclass(frozen=True)
class Settings:
    """How endpoint pods are made; the chart sets these through the environment."""

    namespace: str
    image: str = f"modeldeploy:{__version__}"
    pull_policy: str = "IfNotPresent"
    service_account: str = ""
    # instanceType -> {requests, limits}; "default" for any other type.
    resources: dict[str, dict] = field(default_factory=lambda: {"default": DEFAULT_RESOURCES})
    extra_env: list[dict] = field(default_factory=list)
    progress_deadline: int = 600
    url_template: str = URL_TEMPLATE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        passthrough = [{"name": v, "value": environ[v]} for v in PASSTHROUGH_ENV if v in environ]
        deadline = environ.get("MODELDEPLOY_ENDPOINT_PROGRESS_DEADLINE", "600")
        if not deadline.isdigit():
            raise TerminalError(f"MODELDEPLOY_ENDPOINT_PROGRESS_DEADLINE={deadline!r}: not seconds")
        return cls(
            namespace=environ.get("MODELDEPLOY_ENDPOINT_NAMESPACE") or default_namespace(),
            image=environ.get("MODELDEPLOY_SERVE_IMAGE") or cls.image,
            pull_policy=environ.get("MODELDEPLOY_SERVE_IMAGE_PULL_POLICY") or cls.pull_policy,
            service_account=environ.get("MODELDEPLOY_ENDPOINT_SERVICE_ACCOUNT", ""),
            resources=_json_env(environ, "MODELDEPLOY_ENDPOINT_RESOURCES", None)
            or {"default": DEFAULT_RESOURCES},
            extra_env=passthrough + _json_env(environ, "MODELDEPLOY_ENDPOINT_ENV", []),
            progress_deadline=int(deadline),
            url_template=environ.get("MODELDEPLOY_ENDPOINT_URL_TEMPLATE") or URL_TEMPLATE,
        )

    def resources_for(self, instance_type: str) -> dict:
        return self.resources.get(instance_type) or self.resources.get("default") or {}


# -- names and labels ----------------------------------------------------------------------------


def k8s_name(endpoint: str) -> str:
    """Endpoint names are <= 51 chars of [A-Za-z0-9-]; Service names must be DNS-1035 labels."""
    name = endpoint.lower()
    return name if name[:1].isalpha() else f"md-{name}"


def selector(kname: str) -> dict[str, str]:
    return {MANAGED_BY: "modeldeploy", ENDPOINT_LABEL: kname}


def owned(obj: dict) -> bool:
    """Whether modeldeploy made `obj` (it touches nothing else)."""
    return (obj["metadata"].get("labels") or {}).get(MANAGED_BY) == "modeldeploy"


def url(settings: Settings, kname: str) -> str:
    return settings.url_template.format(service=kname, namespace=settings.namespace)


# -- objects -------------------------------------------------------------------------------------


def _container(settings: Settings, name: str, command: list[str], resources: dict) -> dict:
    return {
        "name": name,
        "image": settings.image,
        "imagePullPolicy": settings.pull_policy,
        "command": command,
        "resources": resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",  # a failure's last words
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _fetch_container(settings: Settings, resources: dict, source: str, digest: str) -> dict:
    """The init container: download the artifact and check its digest, or fail the pod."""
    fetch = _container(
        settings,
        "fetch",
        [
            *("python", "-m", "modeldeploy.providers.local.fetch"),
            *("--source", source, "--sha256", digest, "--dest", MODEL_PATH),
        ],
        resources,
    )
    fetch["env"] = list(settings.extra_env)
    fetch["volumeMounts"] = [
        {"name": "models", "mountPath": "/models"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return fetch


def _server_container(settings: Settings, resources: dict, workers: int) -> dict:
    server = _container(
        settings,
        "server",
        [
            *("modeldeploy", "serve", "--model", MODEL_PATH, "--host", "0.0.0.0"),
            *("--port", str(PORT), "--workers", str(workers)),
        ],
        resources,
    )
    ping = {"httpGet": {"path": "/ping", "port": "http"}, "timeoutSeconds": 2}
    server.update(
        ports=[{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Loading a large model takes a while; liveness starts once it answers.
        startupProbe={**ping, "periodSeconds": 2, "failureThreshold": 90},
        readinessProbe={**ping, "periodSeconds": 5, "failureThreshold": 2},
        livenessProbe={**ping, "periodSeconds": 10, "failureThreshold": 3},
        volumeMounts=[
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    )
    return server


def pod_template(
    settings: Settings,
    kname: str,
    config: str,
    *,
    source: str,
    digest: str,
    instance_type: str,
    workers: int,
) -> dict:
    """Fetch the artifact at `source` (checked against `digest`), then serve it."""
    resources = settings.resources_for(instance_type)
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the server never calls the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [_fetch_container(settings, resources, source, digest)],
        "containers": [_server_container(settings, resources, workers)],
        "volumes": [
            {"name": "models", "emptyDir": {"sizeLimit": "2560Mi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return {
        "metadata": {
            "labels": {**selector(kname), CONFIG_KEY: config},
            "annotations": {CONFIG_KEY: config},
        },
        "spec": spec,
    }


def _object(settings: Settings, api_version: str, kind: str, name: str, spec: dict) -> dict:
    """An object named for endpoint `name`, labelled to be found and recognised as ours."""
    kname = k8s_name(name)
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": kname,
            "namespace": settings.namespace,
            "labels": {**selector(kname), "app.kubernetes.io/name": "modeldeploy-endpoint"},
            "annotations": {NAME_ANNOTATION: name},
        },
        "spec": spec,
    }


def deployment(settings: Settings, name: str, template: dict, replicas: int) -> dict:
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": selector(k8s_name(name))},
        # Old pods serve until new ones are ready, as in a SageMaker update.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "progressDeadlineSeconds": settings.progress_deadline,
        "revisionHistoryLimit": 3,
        "template": template,
    }
    return _object(settings, "apps/v1", "Deployment", name, spec)


def service(settings: Settings, name: str) -> dict:
    spec = {
        "type": "ClusterIP",
        "selector": selector(k8s_name(name)),
        "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    return _object(settings, "v1", "Service", name, spec)


# -- reading them back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """What the Deployment says about its rollout, read from spec, status and annotations."""

    config: str  # the config of the current pod template
    in_service: str
    previous: str | None
    failure: str
    complete: bool  # the current generation is fully rolled out and available
    serving: bool  # some pod is available, of whichever template
    deadline: str | None  # ProgressDeadlineExceeded for the current generation: its message
    deleting: bool

    @classmethod
    def of(cls, dep: dict) -> Rollout:
        meta, spec, st = dep["metadata"], dep["spec"], dep.get("status") or {}
        ann = meta.get("annotations") or {}
        template_ann = spec["template"]["metadata"].get("annotations") or {}
        current = st.get("observedGeneration", 0) >= meta.get("generation", 1)
        updated = st.get("updatedReplicas", 0)
        complete = (
            current
            and updated >= spec.get("replicas", 1)
            and st.get("replicas", 0) <= updated  # no old pod left
            and st.get("availableReplicas", 0) >= updated
        )
        deadline = next(
            (
                c.get("message") or "rollout timed out"
                for c in st.get("conditions") or []
                if c.get("type") == "Progressing"
                and c.get("status") == "False"
                and c.get("reason") == "ProgressDeadlineExceeded"
            ),
            None,
        )
        return cls(
            config=template_ann.get(CONFIG_KEY, ""),
            in_service=ann.get(IN_SERVICE, ""),
            previous=ann.get(PREVIOUS),
            failure=ann.get(FAILURE, ""),
            complete=bool(complete),
            serving=st.get("availableReplicas", 0) >= 1,
            deadline=deadline if current else None,
            deleting=bool(meta.get("deletionTimestamp")),
        )


def pod_trouble(pod: dict) -> list[str]:
    """Why a pod is not ready, in the words of the kubelet and the scheduler."""
    found = []
    st = pod.get("status") or {}
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            found.append(f"not scheduled: {cond.get('message') or cond.get('reason')}")
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        ended = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if ended and ended.get("exitCode"):
            text = (ended.get("message") or ended.get("reason") or "").strip()
            found.append(f"{cs['name']} exited {ended['exitCode']}: {text}")
        elif waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            found.append(f"{cs['name']}: {waiting['reason']}: {waiting.get('message', '')}")
    return found
