"""The API server as kubectl finds it: KUBECONFIG (or --kubeconfig), --context, the context's
namespace; and the ModelDeployment's coordinates, the one place they are written (handlers.py
and kube_status.py import them; this module imports no kopf, so CLI calls stay light)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "mlops.modeldeploy.dev", "v1alpha1", "modeldeployments"
DEFAULT_KUBECONFIG = Path("~/.kube/config")


class KubeError(Exception):
    """The API server could not be reached or refused; the message says which and why."""


@dataclass
class Kube:
    api: client.ApiClient
    namespace: str  # -n, else the context's namespace, else "default"
    context: str | None

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def get(self, name: str, namespace: str | None = None) -> dict:
        namespace = namespace or self.namespace
        try:
            return self.objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as err:
            if err.status == 404:
                raise KubeError(
                    f"no ModelDeployment {name} in namespace {namespace} (context {self.context})"
                    if self.context
                    else f"no ModelDeployment {name} in namespace {namespace}"
                ) from None
            raise KubeError(api_message(err)) from None


def connect(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> Kube:
    """A client for `context` (default: the current one) of `kubeconfig` (default: KUBECONFIG,
    then ~/.kube/config; a KUBECONFIG list is merged, as kubectl does)."""
    # Read at call time: the client library reads KUBECONFIG once, when it is imported.
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(DEFAULT_KUBECONFIG.expanduser())
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)
        chosen = current
        if context:
            chosen = next((c for c in contexts if c["name"] == context), None)
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts)
                raise KubeError(f"no context {context} in {path} (it has: {names})")
        api = config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except config.ConfigException as err:
        raise KubeError(f"cannot use the kubeconfig {path}: {err}") from None
    ctx_namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return Kube(api, namespace or ctx_namespace or "default", (chosen or {}).get("name"))


def api_message(err: ApiException) -> str:
    """The API server's own sentence for a refusal, not the client's dump of the response."""
    import json

    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{err.status} {err.reason}: {message or err.body}"
