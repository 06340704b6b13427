"""Kubernetes hosting of the local provider: the life cycle of a Deployment and a Service per
endpoint against the Kubernetes API (what they contain is `kube_render`).

Statuses follow SageMaker's life cycle, read from the Deployment controller's status:
Creating until the rollout of the current generation is complete, then InService; Failed when a
new endpoint's rollout passes its progress deadline. An update replaces the pod template and
rolls with maxUnavailable 0, so the old pods serve until the new ones are ready (Updating);
when the update passes its deadline, the backend puts the previous template back (kept in an
annotation while the update runs) and reports InService with a failure reason naming the failed
config, as SageMaker does. All bookkeeping lives in the Deployment's annotations, so a restarted
operator picks up where it was. Without `supervise` (a preview) a look reads the Deployment and
reports what a supervising look would, writing nothing back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from modeldeploy.providers.errors import (
    ProviderError,
    TerminalError,
    TransientError,
    from_http,
    read_only_refusal,
    unreachable,
)
from modeldeploy.providers.local import kube_render as render
from modeldeploy.providers.local.hosting_process import post_invocation
from modeldeploy.providers.local.kube_render import (
    CONFIG_KEY,
    ENDPOINT_LABEL,
    FAILURE,
    IN_SERVICE,
    MANAGED_BY,
    NAME_ANNOTATION,
    PREVIOUS,
    Settings,
    k8s_name,
    owned,
)
from modeldeploy.providers.local.state import State
from modeldeploy.remote import DeployRequest, Endpoint, EndpointStatus, InvokeResult

# The spec admits s3:// and file:// artifacts; of those, only s3:// reaches a pod.
FETCHABLE = ("s3",)
FILE_REFUSED = (
    "the local provider in a cluster needs s3:// artifacts; file:// paths are not visible to "
    "endpoint pods"
)
TIMEOUT = 30


def api_client() -> k8s.ApiClient:
    """In a pod, its ServiceAccount; elsewhere the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    cfg = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        try:
            # Read KUBECONFIG now: the client's own default is fixed when it is imported.
            path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
        except (k8s_config.ConfigException, OSError) as err:
            raise TerminalError(f"no in-cluster config and no usable kubeconfig: {err}") from err
    return k8s.ApiClient(cfg)


def _detail(err: k8s.ApiException) -> str:
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


class _Api:
    """The few calls the backend makes, with plain JSON dicts in and out (no model classes)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)

    def __call__(
        self, what: str, call: Callable[..., Any], *args: Any, ok: tuple = (), **kwargs: Any
    ) -> Any:
        """The answer as a dict, or None when the API answered a status in `ok`."""
        try:
            resp = call(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
        except k8s.ApiException as err:
            if err.status in ok:
                return None
            raise from_http(err.status, f"{what}: HTTP {err.status}: {_detail(err)}") from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise unreachable(err, what) from err
        return json.loads(resp.data or b"{}")


class KubernetesHosting:
    """The hosting backend for a cluster: same methods and statuses as `ProcessHosting`."""

    def __init__(
        self,
        state: State,
        *,
        workers: int = 1,
        settings: Settings | None = None,
        api: k8s.ApiClient | None = None,
        supervise: bool = True,
    ) -> None:
        self.state = state
        self.workers = workers
        self.supervise = supervise
        self.settings = settings or Settings.from_env()
        self.namespace = self.settings.namespace
        self.kube = _Api(api or api_client())

    def source_of(self, digest: str) -> str:
        """A URI a pod can fetch the bytes with this sha256 from."""
        sources = self.state.sources(digest)
        if not sources:
            raise TerminalError(f"no registered version has the artifact sha256 {digest}")
        # Every version with these bytes shares the store's copy, and any fetchable source of
        # them will do, since the pod checks the digest.
        for source in sources:
            if urlparse(source).scheme in FETCHABLE:
                return source
        raise TerminalError(f"{FILE_REFUSED} (source: {sources[0]})")

    # -- API helpers -----------------------------------------------------------------------------

    def _read(self, kind: str, call: Callable[..., Any], kname: str) -> dict | None:
        what = f"reading {kind} {self.namespace}/{kname}"
        return self.kube(what, call, kname, self.namespace, ok=(404,))

    def _mine(self, kind: str, kname: str, obj: dict | None) -> dict | None:
        """`obj` as read; refuses one that modeldeploy did not create."""
        if obj is not None and not owned(obj):
            raise TerminalError(
                f"{kind} {self.namespace}/{kname} exists and is not managed by modeldeploy"
            )
        return obj

    def _get_deployment(self, kname: str) -> dict | None:
        dep = self._read("deployment", self.kube.apps.read_namespaced_deployment, kname)
        return self._mine("deployment", kname, dep)

    def _get_service(self, kname: str) -> dict | None:
        return self._read("service", self.kube.core.read_namespaced_service, kname)

    def _replace(self, dep: dict) -> None:
        # PUT with the resourceVersion just read: a concurrent writer makes it fail (409).
        kname = dep["metadata"]["name"]
        self.kube(
            f"updating deployment {self.namespace}/{kname}",
            self.kube.apps.replace_namespaced_deployment,
            kname,
            self.namespace,
            dep,
        )

    def _ensure_service(self, name: str) -> None:
        kname = k8s_name(name)
        if self._mine("service", kname, self._get_service(kname)) is None:
            wanted = render.service(self.settings, name)
            self._create("service", self.kube.core.create_namespaced_service, wanted)

    def _create(self, kind: str, call: Callable[..., Any], body: dict) -> bool:
        """Create `body`; False when it already exists."""
        what = f"creating {kind} {self.namespace}/{body['metadata']['name']}"
        try:
            return self.kube(what, call, self.namespace, body, ok=(409,)) is not None
        except TerminalError as err:
            if "HTTP 404" in str(err):  # the namespace itself is missing
                raise TerminalError(
                    f"{what}: namespace {self.namespace} does not exist (it holds the local "
                    "provider's endpoints: create it, or set MODELDEPLOY_ENDPOINT_NAMESPACE)"
                ) from err
            raise

    def _pod_trouble(self, kname: str, config: str) -> str:
        try:
            pods = self.kube(
                "listing endpoint pods",
                self.kube.core.list_namespaced_pod,
                self.namespace,
                label_selector=f"{ENDPOINT_LABEL}={kname},{CONFIG_KEY}={config}",
            )
        except ProviderError:
            return ""  # the reason is a courtesy; the status does not depend on it
        found = [t for pod in pods.get("items", []) for t in render.pod_trouble(pod)]
        unique = list(dict.fromkeys(found))[:3]
        return f" ({'; '.join(unique)})" if unique else ""

    # -- the life cycle --------------------------------------------------------------------------

    def deploy(self, request: DeployRequest) -> None:
        """Create the endpoint, or start rolling it to the request's config; returns once
        accepted. The instance type picks the pods' resources and the count their replicas."""
        name, config, count = request.endpoint_name, request.config_name, request.instance_count
        if not self.supervise:
            raise read_only_refusal(f"deploying endpoint {name}")
        digest = request.version.artifact_digest
        kname = k8s_name(name)
        template = render.pod_template(
            self.settings,
            kname,
            config,
            source=self.source_of(digest),
            digest=digest,
            instance_type=request.instance_type,
            workers=self.workers,
        )
        dep = self._get_deployment(kname)  # refuses one that modeldeploy did not create
        self._ensure_service(name)
        if dep is None:
            wanted = render.deployment(self.settings, name, template, count)
            if not self._create("deployment", self.kube.apps.create_namespaced_deployment, wanted):
                raise TransientError(f"deployment {self.namespace}/{kname} appeared meanwhile")
            return
        if render.Rollout.of(dep).config == config:
            return
        endpoint = self.describe(name)  # settles a finished rollout or rolls a failed one back
        if endpoint is None:
            raise TransientError(f"endpoint {name} disappeared meanwhile")
        if EndpointStatus.is_transitional(endpoint.status):
            raise TransientError(f"endpoint {name} is {endpoint.status}")
        if endpoint.status == EndpointStatus.FAILED:
            raise TerminalError(f"endpoint {name} is Failed: delete it first")
        dep = self._get_deployment(kname)
        if dep is None:
            raise TransientError(f"endpoint {name} disappeared meanwhile")
        rollout = render.Rollout.of(dep)
        if rollout.config == config:
            return
        ann = dep["metadata"].setdefault("annotations", {})
        previous = {"replicas": dep["spec"].get("replicas", 1), "template": dep["spec"]["template"]}
        ann[PREVIOUS] = json.dumps(previous, sort_keys=True, separators=(",", ":"))
        ann.pop(FAILURE, None)
        dep["spec"].update(
            template=template,
            replicas=count,
            progressDeadlineSeconds=self.settings.progress_deadline,
        )
        self._replace(dep)

    def describe(self, name: str) -> Endpoint | None:
        """The endpoint's state; records a finished rollout and rolls back a failed update
        (without `supervise`: reports the state as if it had, and writes nothing)."""
        try:
            return self._look(name)
        except TerminalError as err:  # observe retries reads; a forbidden read shows there
            raise TransientError(str(err)) from err

    def _look(self, name: str) -> Endpoint | None:
        kname = k8s_name(name)
        dep = self._get_deployment(kname)
        if dep is None:
            return None
        r = render.Rollout.of(dep)
        url = render.url(self.settings, kname)
        ann = dep["metadata"].setdefault("annotations", {})
        if r.deleting:
            return Endpoint(name, EndpointStatus.DELETING, r.in_service or r.config, r.failure, url)
        if r.complete:
            # A rollback keeps its failure reason; a create or an update that lands clears it.
            reason = r.failure if r.in_service == r.config else ""
            if r.in_service != r.config or r.previous is not None:
                ann[IN_SERVICE] = r.config
                ann.pop(PREVIOUS, None)
                ann.pop(FAILURE, None)
                if reason:
                    ann[FAILURE] = reason
                if self.supervise:
                    self._replace(dep)
            return Endpoint(name, EndpointStatus.IN_SERVICE, r.config, reason, url)
        if r.previous is not None:  # an update in flight; the old pods serve meanwhile
            if r.deadline is None:
                return Endpoint(name, EndpointStatus.UPDATING, r.in_service, "", url)
            why = f"update to {r.config} failed: {r.deadline}{self._pod_trouble(kname, r.config)}"
            why = why[:1000]
            previous = json.loads(r.previous)
            dep["spec"].update(template=previous["template"], replicas=previous["replicas"])
            ann.pop(PREVIOUS, None)
            ann[FAILURE] = why
            if self.supervise:
                self._replace(dep)
            return Endpoint(name, EndpointStatus.IN_SERVICE, r.in_service, why, url)
        if r.config == r.in_service:  # was in service: pods lost, or a rollback settling
            if r.serving:
                return Endpoint(name, EndpointStatus.IN_SERVICE, r.config, r.failure, url)
            why = f"no ready pod{self._pod_trouble(kname, r.config)}"
            return Endpoint(name, EndpointStatus.SYSTEM_UPDATING, r.config, why, url)
        if r.deadline is not None:
            why = f"{r.deadline}{self._pod_trouble(kname, r.config)}"
            return Endpoint(name, EndpointStatus.FAILED, r.config, why, url)
        return Endpoint(name, EndpointStatus.CREATING, r.config, "", url)

    def names(self, prefix: str) -> list[str]:
        deps = self.kube(
            "listing endpoint deployments",
            self.kube.apps.list_namespaced_deployment,
            self.namespace,
            label_selector=f"{MANAGED_BY}=modeldeploy",
        )
        found = [
            (d["metadata"].get("annotations") or {}).get(NAME_ANNOTATION, d["metadata"]["name"])
            for d in deps.get("items", [])
        ]
        return sorted(n for n in found if n.startswith(prefix))

    def delete(self, name: str) -> bool:
        """Delete the Deployment (its pods go with it) and the Service; True once both are gone."""
        if not self.supervise:
            raise read_only_refusal(f"deleting endpoint {name}")
        kname = k8s_name(name)
        svc = self._mine("service", kname, self._get_service(kname))
        dep = self._get_deployment(kname)
        for kind, obj, call in (
            ("deployment", dep, self.kube.apps.delete_namespaced_deployment),
            ("service", svc, self.kube.core.delete_namespaced_service),
        ):
            if obj is not None:
                what = f"deleting {kind} {self.namespace}/{kname}"
                # Background: the object goes at once, the garbage collector takes its pods.
                self.kube(
                    what, call, kname, self.namespace, ok=(404,), propagation_policy="Background"
                )
        return self._get_deployment(kname) is None and self._get_service(kname) is None

    def invoke(self, name: str, payload: str, content_type: str) -> InvokeResult:
        """POST to the endpoint's Service (reachable from inside the cluster)."""
        return post_invocation(self.describe(name), name, payload, content_type)
