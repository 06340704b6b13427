"""Least privilege, for every rendering of the chart and the kustomize base: the operator's RBAC
and its locked-down pod, and a real API server asked through `kubectl auth can-i` what the
rendered roles actually allow, down to the local provider's endpoints backend doing its whole
job with exactly its Role.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from deploy_artifacts import (
    ENDPOINT_GRANTS,
    EXPECTED_GRANTS,
    GROUP,
    NAMESPACE_GRANTS,
    RENDERINGS,
    Helm,
    dockerfile_uid,
    documents,
    env_of,
    one,
    operator_container,
    rbac_grants,
    render_chart,
)
from kube import kubectl
from kubernetes import config as k8s_config
from providers import deploy_request

from modeldeploy.cli import build_parser
from modeldeploy.cluster import ControlPlane
from modeldeploy.providers.local.hosting_kubernetes import KubernetesHosting
from modeldeploy.providers.local.kube_render import Settings
from modeldeploy.providers.local.state import State

pytest_plugins = ["kube", "deploy_artifacts"]

SENSITIVE = {"secrets", "configmaps", "pods/exec", "serviceaccounts/token", "tokenreviews"}


def test_local_provider_rbac_follows_its_hosting(
    helm: Helm, chart_default: list[dict[str, Any]]
) -> None:
    """Deployments and Services are granted only where the local provider runs endpoints."""
    process = documents(
        render_chart(helm, "--set", "provider=local", "--set", "local.hosting=process")
    )
    assert not [o for o in process if o["kind"] in ("Role", "RoleBinding")]
    env = env_of(operator_container(one(process, "Deployment")))
    assert env["MODELDEPLOY_LOCAL_HOSTING"] == "process"
    assert "MODELDEPLOY_ENDPOINT_NAMESPACE" not in env

    sagemaker = documents(render_chart(helm, "--set", "local.hosting=kubernetes"))
    assert not [o for o in sagemaker if o["kind"] in ("Role", "RoleBinding")]

    values = ["--set", "provider=local", "--set", "local.endpointNamespace=ml-endpoints"]
    values += ["--set", "local.serveImage=registry.example/serve:1", "--set", "local.workers=2"]
    objs = documents(render_chart(helm, *values))
    role, binding = one(objs, "Role"), one(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ml-endpoints"
    assert rbac_grants(role) == ENDPOINT_GRANTS
    assert one(objs, "ClusterRole")["rules"] == one(chart_default, "ClusterRole")["rules"]
    env = env_of(operator_container(one(objs, "Deployment")))
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.namespace == "ml-endpoints"
    assert settings.image == "registry.example/serve:1"
    assert env["MODELDEPLOY_LOCAL_WORKERS"] == "2"
    assert settings.resources_for("ml.m5.large") == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_rbac_is_least_privilege(rendering: str, request: pytest.FixtureRequest) -> None:
    objs = request.getfixturevalue(rendering)
    role = one(objs, "ClusterRole")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[key]), f"wildcard in {rule}"
    grants = rbac_grants(role)
    assert not {resource for _, resource in grants} & SENSITIVE
    assert {g: v for g, v in grants.items() if g not in NAMESPACE_GRANTS} == EXPECTED_GRANTS
    # The binding gives exactly this role to exactly the operator's ServiceAccount.
    binding, sa = one(objs, "ClusterRoleBinding"), one(objs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"],
        }
    ]
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    # A Role, if any, is the local provider's, and its binding names the same ServiceAccount.
    for role in (o for o in objs if o["kind"] == "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule[key]), f"wildcard in {rule}"
        assert rbac_grants(role) == ENDPOINT_GRANTS
        (bound,) = [o for o in objs if o["kind"] == "RoleBinding"]
        assert bound["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert bound["roleRef"]["name"] == role["metadata"]["name"]
        assert bound["subjects"] == binding["subjects"]


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_operator_pod_is_locked_down(rendering: str, request: pytest.FixtureRequest) -> None:
    deployment = one(request.getfixturevalue(rendering), "Deployment")
    # kopf runs standalone (no peering): never two operators at once, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(deployment)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # The root filesystem is read-only, so /tmp (artifact inspection) is an emptyDir.
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"])
    # The arguments are valid for the operator's own CLI, and the probe hits its liveness URL.
    args = build_parser().parse_args(["run", *container["args"]])
    assert args.default_provider is None  # the provider comes from the environment
    assert env_of(container)["MODELDEPLOY_DEFAULT_PROVIDER"] in ("sagemaker", "local")
    liveness = urlparse(args.liveness)
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == liveness.path
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == liveness.port


def allowed(kubeconfig: Path, user: str, ns: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as `user` in `ns`: resource -> verbs."""
    out = kubectl(kubeconfig, "auth", "can-i", "--list", f"--as={user}", "-n", ns).stdout
    rows: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        m = re.fullmatch(r"\s*(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*", line)
        assert m, f"unexpected can-i line: {line!r}"
        resource, _urls, _names, verbs = m.groups()
        if resource:
            rows.setdefault(resource, set()).update(verbs.split())
    return rows


def can_i_name(group: str, resource: str) -> str:
    """How `kubectl auth can-i --list` names a resource: plural.group[/subresource]."""
    base, _, sub = resource.partition("/")
    name = f"{base}.{group}" if group else base
    return f"{name}/{sub}" if sub else name


@pytest.mark.parametrize("rendering", ["kustomized", "chart_full"])
def test_api_server_grants_the_role_exactly(
    kubeconfig: Path, crd: None, rendering: str, request: pytest.FixtureRequest
) -> None:
    """The rendered ClusterRole, bound to a fresh ServiceAccount identity: the authorizer allows
    what the role says on top of what every ServiceAccount has, and nothing else."""
    role = one(request.getfixturevalue(rendering), "ClusterRole")
    suffix = secrets.token_hex(3)
    ns, name = f"md-rbac-{suffix}", f"md-rbac-test-{suffix}"
    user = f"system:serviceaccount:{ns}:operator"
    role = {**role, "metadata": {"name": name}}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
    }
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    try:
        baseline = allowed(kubeconfig, f"system:serviceaccount:{ns}:nobody", ns)
        granted = allowed(kubeconfig, user, ns)
        extra = {r: v - baseline.get(r, set()) for r, v in granted.items()}
        assert {r: v for r, v in extra.items() if v} == {
            can_i_name(group, resource): verbs
            for (group, resource), verbs in rbac_grants(role).items()
        }

        def can_i(verb: str, resource: str, *flags: str) -> str:
            args = ("auth", "can-i", verb, resource, *flags, f"--as={user}", "-n", ns)
            return kubectl(kubeconfig, *args, check=False).stdout.strip()

        # A positive answer first, so that the refusals below cannot be vacuous.
        assert can_i("patch", f"modeldeployments.{GROUP}", "--subresource=status") == "yes"
        for verb, resource in [
            ("get", "secrets"),
            ("list", "secrets"),
            ("get", "configmaps"),
            ("update", f"modeldeployments.{GROUP}"),
            ("delete", f"modeldeployments.{GROUP}"),
            ("create", "deployments.apps"),
            ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
            ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ]:
            assert can_i(verb, resource) == "no", f"{user} may {verb} {resource}"
    finally:
        kubectl(kubeconfig, "delete", "clusterrolebinding,clusterrole", name, "--wait=false")


def test_operator_identity_runs_local_endpoints_in_their_namespace_only(
    control_plane: ControlPlane, kubeconfig: Path, helm: Helm, tmp_path: Path
) -> None:
    """The chart's Role for provider local, bound for real: the operator's ServiceAccount may
    manage Deployments and Services in the endpoints' namespace and nowhere else, still reads no
    Secret, and the endpoints backend, configured from the chart's env and authenticated as
    that ServiceAccount, does its whole job with exactly these rights."""
    suffix = secrets.token_hex(3)
    release_ns, endpoints_ns = f"md-sys-{suffix}", f"md-eps-{suffix}"
    for ns in (release_ns, endpoints_ns):
        kubectl(kubeconfig, "create", "namespace", ns)
    values = ["--set", "provider=local", "--set", f"local.endpointNamespace={endpoints_ns}"]
    objs = documents(render_chart(helm, *values, release=f"md-{suffix}", ns=release_ns))
    kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all([one(objs, "Role"), one(objs, "RoleBinding")]),
    )
    sa = one(objs, "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{release_ns}:{sa}"

    def can_i(verb: str, resource: str, ns: str) -> str:
        args = ("auth", "can-i", verb, resource, f"--as={user}", "-n", ns)
        return kubectl(kubeconfig, *args, check=False).stdout.strip()

    for verb, resource in [
        ("create", "deployments.apps"),
        ("update", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("create", "services"),
        ("delete", "services"),
        ("list", "pods"),
    ]:
        assert can_i(verb, resource, endpoints_ns) == "yes", f"{user} may not {verb} {resource}"
    for verb, resource, ns in [
        ("get", "secrets", endpoints_ns),
        ("list", "secrets", endpoints_ns),
        ("get", "configmaps", endpoints_ns),
        ("create", "pods", endpoints_ns),
        ("create", "pods/exec", endpoints_ns),
        ("patch", "services", endpoints_ns),
        ("create", "deployments.apps", release_ns),
        ("create", "deployments.apps", "default"),
        ("create", "services", release_ns),
    ]:
        assert can_i(verb, resource, ns) == "no", f"{user} may {verb} {resource} in {ns}"

    # The backend as the operator runs it: settings from the chart's env, the SA's identity.
    env = env_of(operator_container(one(objs, "Deployment")))
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.namespace == endpoints_ns
    state = State(tmp_path / "registry.db")
    state.ensure_group("churn", None)
    version = state.register(
        "churn",
        source="s3://models/churn/1/model.tar.gz",
        artifact=tmp_path / "model.tar.gz",
        digest="a" * 64,
        framework_version="3.2-0",
        metrics={},
    )
    as_operator = k8s_config.new_client_from_config(
        config_file=str(control_plane.user_kubeconfig(user))
    )
    backend = KubernetesHosting(state, settings=settings, api=as_operator)
    name = f"rbac-{suffix}-staging"
    backend.deploy(deploy_request(version, name, instance_type="", config_name=f"{name}-c1"))
    assert backend.describe(name).status == "Creating"
    dep = json.loads(
        kubectl(kubeconfig, "get", "deployment", name, "-n", endpoints_ns, "-o", "json").stdout
    )
    done = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    # No controller-manager runs here: write the rollout's completion as it would.
    kubectl(
        kubeconfig,
        *("patch", "deployment", name, "-n", endpoints_ns, "--subresource=status"),
        *("--type=merge", "-p", json.dumps({"status": done})),
    )
    assert backend.describe(name).status == "InService"  # records it: an update (PUT)
    second = deploy_request(version, name, instance_type="", count=2, config_name=f"{name}-c2")
    backend.deploy(second)  # another PUT
    assert backend.describe(name).status == "Updating"
    assert backend.names("rbac-") == [name]
    assert backend.delete(name) is True
