"""The local provider's deployment projects: its counterpart of a SageMaker project made from
the "MLOps template for model deployment" (`remote.PROJECT_TEMPLATE`).

A project is a directory, `<root>/projects/<name>/`, holding `project.json` (the project, its
pipeline's runs and stages, both stacks, which version each endpoint config serves) and `repo/`
with the template's `staging-config.json` and `prod-config.json`, which a person may edit as
they would the CodeCommit repository. The pipeline (`pipeline.Pipeline`) deploys through the
provider's own hosting to `<name>-staging` and `<name>-prod`. It advances when the project is
described by a supervising provider (the operator observes every few seconds); a preview only
reads. Everything is 0600 in 0700 directories, and each write replaces the file whole.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import secrets
import shutil
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modeldeploy.processes import private_dir, private_file, write_private_json
from modeldeploy.providers.errors import GateMoved, TerminalError, read_only_refusal
from modeldeploy.providers.interface import Hosting
from modeldeploy.providers.local.pipeline import (
    ACTIONS,
    CONFIG_FILES,
    STAGES,
    Pipeline,
    new_stages,
    now,
    seed_config,
)
from modeldeploy.providers.local.state import State
from modeldeploy.remote import (
    PROJECT_TEMPLATE,
    STAGING_STAGE,
    Endpoint,
    GateDecision,
    PipelineAction,
    PipelineExecution,
    PipelineStage,
    Project,
    ProjectRequest,
    Stack,
    pipeline_name,
)

OPERATOR = "modeldeploy"  # updated_by of the gate decisions the operator makes
_ID_CHARS = string.ascii_lowercase + string.digits


def project_arn(name: str) -> str:
    """In the style of the local registry's ARNs (`state.group_arn`)."""
    return f"local:project/{name}"


class LocalProjects:
    """`interface.Projects` for the local provider."""

    def __init__(self, state: State, hosting: Hosting, root: Path, *, supervise: bool = True):
        self.state = state
        self.hosting = hosting
        self.root = root / "projects"
        self.supervise = supervise

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise TerminalError(f"{name!r} is not a project name")
        return self.root / name

    def _load(self, name: str) -> dict | None:
        try:
            return json.loads((self._dir(name) / "project.json").read_text())
        except FileNotFoundError:
            return None  # never made, deleted, or a create that did not finish

    def _save(self, data: dict) -> None:
        write_private_json(self._dir(data["name"]) / "project.json", data, indent=2)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across the operator's threads and other processes (a person's
        decision from the CLI): every change is read, made and saved under this lock."""
        private_dir(self.root)
        with open(self.root / ".lock", "a", opener=private_file) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _pipeline(self, data: dict) -> Pipeline:
        return Pipeline(data, self.state, self.hosting, self._dir(data["name"]) / "repo")

    # -- interface.Projects ------------------------------------------------------------------

    def describe(self, name: str) -> Project | None:
        """The project; a supervising provider first moves its pipeline as far as it goes."""
        if not self.supervise:
            data = self._load(name)
            return self._render(data) if data else None
        with self._locked():
            data = self._load(name)
            if data is None:
                return None
            before = json.dumps(data)
            self._pipeline(data).tick()
            if json.dumps(data) != before:  # a steady project is not rewritten at every look
                self._save(data)
        return self._render(data)

    def create(self, request: ProjectRequest) -> Project:
        name = request.name
        if not self.supervise:
            raise read_only_refusal(f"creating project {name}")
        self._check_template(request)
        unknown = sorted(key for key, _ in request.parameters)
        if unknown:
            raise TerminalError(
                f"project {name}: {PROJECT_TEMPLATE!r} has no parameters {', '.join(unknown)}"
                " (it takes only SourceModelPackageGroupName); remove them"
            )
        if self.state.group_arn(request.group) is None:
            raise TerminalError(
                f"project {name}: model package group {request.group} does not exist in the"
                " local registry"
            )
        with self._locked():
            data = self._load(name)
            if data is not None:
                if data["owner"] != request.owner:
                    raise TerminalError(
                        f"project {name} exists and belongs to ModelDeployment"
                        f" {data['owner'] or '(none)'}; choose another"
                        " spec.deployment.project.name"
                    )
                return self._render(data)  # a retry after a lost answer
            data = self._new(request)
        return self._render(data)

    def _check_template(self, request: ProjectRequest) -> None:
        other = request.product_id or request.template_url
        if other or request.template_product_name not in (None, PROJECT_TEMPLATE):
            named = other or request.template_product_name
            raise TerminalError(
                f"project {request.name}: template {named!r} is not available: the local"
                f" provider has only {PROJECT_TEMPLATE!r}; remove productId, templateUrl and"
                " templateProductName from spec.deployment.project"
            )

    def _new(self, request: ProjectRequest) -> dict:
        """Seed the repository, then write project.json last: a directory without it is a
        create that did not finish, and the next create starts it over."""
        private_dir(self._dir(request.name))  # mkdir's mode does not reach a parent it makes
        repo = private_dir(self._dir(request.name) / "repo")
        for which, filename in CONFIG_FILES.items():
            write_private_json(repo / filename, seed_config(which), indent=2)
        project_id = "p-" + "".join(secrets.choice(_ID_CHARS) for _ in range(12))
        data = {
            "name": request.name,
            "project_id": project_id,
            "arn": project_arn(request.name),
            "status": "CreateInProgress",
            "message": "",
            "owner": request.owner,
            "group": request.group,
            "description": request.description,
            "created": now(),
            "pipeline": pipeline_name(request.name, project_id),
            "trigger": None,  # what the last run started on; None: none yet
            "executions": [],  # newest first
            "stages": new_stages(),
            "stacks": {},  # staging | prod -> {name, status, reason}
            "served": {},  # endpoint config name -> the version it serves
        }
        self._save(data)
        return data

    def decide(self, decision: GateDecision) -> None:
        self._decide(decision, OPERATOR)

    def _decide(self, decision: GateDecision, by: str) -> None:
        if not self.supervise:
            raise read_only_refusal(f"deciding the approval of project {decision.project}")
        with self._locked():
            data = self._load(decision.project)
            if data is None:
                raise TerminalError(f"project {decision.project} does not exist")
            if decision.pipeline != data["pipeline"]:
                raise GateMoved(
                    f"PipelineNotFoundException: project {decision.project}'s pipeline is"
                    f" {data['pipeline']}, not {decision.pipeline}"
                )
            self._pipeline(data).decide(
                decision.execution_id, decision.token, decision.approve, decision.summary, by
            )
            self._save(data)

    def decide_as(self, name: str, approve: bool, summary: str, by: str) -> None:
        """A person's decision, as in the console: whatever approval waits now.
        TerminalError when none waits."""
        project = self.describe(name)
        gate = project.gate if project else None
        if project is None or gate is None or gate.status != "InProgress":
            raise TerminalError(f"project {name}: no approval waits")
        execution = project.stage(STAGING_STAGE).execution_id
        decision = GateDecision(name, project.pipeline, execution, gate.token, approve, summary)
        self._decide(decision, by)

    def delete(self, project: Project) -> tuple[bool, str]:
        """Both endpoints through the hosting (what deleting the stacks does), then the
        project's directory. Nothing is kept: a local project has no bucket to retain."""
        if not self.supervise:
            raise read_only_refusal(f"deleting project {project.name}")
        with self._locked():
            for stage in ("staging", "prod"):
                if not self.hosting.delete(f"{project.name}-{stage}"):
                    return False, ""
            shutil.rmtree(self._dir(project.name), ignore_errors=True)
        return True, ""

    # -- the neutral view --------------------------------------------------------------------

    def _render(self, data: dict) -> Project:
        stacks = {
            which: Stack(s["name"], s["status"], s["reason"]) for which, s in data["stacks"].items()
        }
        return Project(
            name=data["name"],
            project_id=data["project_id"],
            arn=data["arn"],
            status=data["status"],
            message=data["message"],
            owner=data["owner"],
            group=data["group"],
            pipeline=data["pipeline"],
            stages=tuple(_stage(name, data["stages"][name]) for name in STAGES),
            executions=tuple(
                PipelineExecution(e["id"], e["status"], e["summary"]) for e in data["executions"]
            ),
            staging_stack=stacks.get("staging"),
            production_stack=stacks.get("prod"),
            staging=self._endpoint(f"{data['name']}-staging", data["served"]),
            production=self._endpoint(f"{data['name']}-prod", data["served"]),
        )

    def _endpoint(self, name: str, served: dict[str, int]) -> Endpoint | None:
        endpoint = self.hosting.describe(name)
        if endpoint is None:
            return None
        return dataclasses.replace(endpoint, served_version=served.get(endpoint.config_name))


def _stage(name: str, stored: dict) -> PipelineStage:
    actions = tuple(
        PipelineAction(
            action,
            stored["actions"][action]["status"],
            stored["actions"][action]["summary"],
            stored["actions"][action]["token"],
            stored["actions"][action]["last_change"],
            stored["actions"][action]["updated_by"],
        )
        for stage, action in ACTIONS
        if stage == name
    )
    return PipelineStage(name, stored["status"], stored["execution_id"], actions)
