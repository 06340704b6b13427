"""The local counterpart of a deployment project's CodePipeline: its state machine.

The pipeline of the "MLOps template for model deployment" is Source -> Build -> DeployStaging
(DeployResourcesStaging, TestStaging, ApproveDeployment) -> DeployProd (DeployResourcesProd).
`Pipeline` runs it over the project's stored record (a plain dict, mutated in place; `project`
saves it): each `tick` starts a run when the template's EventBridge rules would (a version
Approved or Rejected, a change of the project's repository) and moves runs forward as far as
the endpoints allow. Nothing waits in here: the operator ticks at every observe.
Statuses are CodePipeline's and CloudFormation's words, verbatim.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from modeldeploy import naming
from modeldeploy.providers.errors import GateMoved, TerminalError, TransientError
from modeldeploy.providers.interface import Hosting
from modeldeploy.providers.local.state import State
from modeldeploy.remote import (
    APPROVED,
    BUILD_STAGE,
    GATE_ACTION,
    PROD_STAGE,
    REJECTED,
    SOURCE_STAGE,
    STAGING_STAGE,
    DeployRequest,
    EndpointStatus,
    stack_name,
)

ACTIONS: tuple[tuple[str, str], ...] = (
    (SOURCE_STAGE, "ModelDeployInfraCode"),
    (BUILD_STAGE, "BuildDeploymentTemplates"),
    (STAGING_STAGE, "DeployResourcesStaging"),
    (STAGING_STAGE, "TestStaging"),
    (STAGING_STAGE, GATE_ACTION),
    (PROD_STAGE, "DeployResourcesProd"),
)
STAGES = (SOURCE_STAGE, BUILD_STAGE, STAGING_STAGE, PROD_STAGE)
PROD_STEP = 5  # a run at or past this step has entered DeployProd: it is never superseded
GATE_STEP = 4
CONFIG_FILES = {"staging": "staging-config.json", "prod": "prod-config.json"}
GATE_SUMMARY = "Approve this model for Production"
MAX_EXECUTIONS = 50  # CodePipeline keeps a year of history; a bounded file is enough here


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def seed_config(stage: str) -> dict:
    """A config file as the template's seed repository holds it."""
    return {
        "Parameters": {
            "StageName": stage,
            "EndpointInstanceCount": "1",
            "EndpointInstanceType": "ml.m5.large",
        }
    }


def new_stages() -> dict:
    """Every stage and action of the pipeline, never run."""
    stages: dict = {s: {"status": "", "execution_id": "", "actions": {}} for s in STAGES}
    for stage, action in ACTIONS:
        stages[stage]["actions"][action] = {
            **{"status": "", "summary": "", "token": "", "last_change": ""},
            **{"updated_by": "", "execution_id": ""},
        }
    return stages


def read_config(repo: Path, which: str) -> tuple[str, int]:
    """(instance type, instance count) from a config file; ValueError saying what is wrong."""
    path = repo / CONFIG_FILES[which]
    try:
        params = json.loads(path.read_text())["Parameters"]
        count, kind = int(params["EndpointInstanceCount"]), params["EndpointInstanceType"]
    except OSError as err:
        raise ValueError(f"{path.name}: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name}: invalid JSON: {err}") from err
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path.name}: Parameters.{err} is missing") from err
    if count < 1 or not isinstance(kind, str) or not kind:
        raise ValueError(f"{path.name}: EndpointInstanceCount/EndpointInstanceType are invalid")
    return kind, count


class Pipeline:
    """One project's pipeline over its stored record `data`."""

    def __init__(self, data: dict, state: State, hosting: Hosting, repo: Path) -> None:
        self.data, self.state, self.hosting, self.repo = data, state, hosting, repo

    # -- runs --------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.data["status"] == "CreateInProgress":
            self.data["status"] = "CreateCompleted"
        trigger = self._trigger()
        if trigger != self.data["trigger"]:  # None at create: the first run starts then
            self.data["trigger"] = trigger
            self._start()
        for execution in reversed(self.data["executions"]):  # oldest first
            if execution["status"] != "InProgress":
                continue
            while execution["status"] == "InProgress" and self._step(execution):
                pass
            if execution["status"] == "InProgress":
                break  # a newer run waits until this one leaves DeployProd

    def _trigger(self) -> dict:
        """What the template's EventBridge rules watch: the group's Approved/Rejected versions
        (rule `-model`) and the repository's main branch (rule `-code`)."""
        decided = [
            [v.version, v.approval_status]
            for v in self.state.versions(self.data["group"])
            if v.approval_status in (APPROVED, REJECTED)
        ]
        repo = hashlib.sha256()
        for name in sorted(CONFIG_FILES.values()):
            path = self.repo / name
            repo.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
        return {"approvals": sorted(decided), "repo": repo.hexdigest()}

    def _start(self) -> None:
        for older in self.data["executions"]:
            if older["status"] == "InProgress" and older["step"] < PROD_STEP:
                self._supersede(older)
        execution = {"id": str(uuid.uuid4()), "status": "InProgress", "summary": "", "step": 0}
        execution.update(configs={}, version=None, version_arn="", deploys={})
        self.data["executions"] = [execution, *self.data["executions"]][:MAX_EXECUTIONS]

    def _supersede(self, execution: dict) -> None:
        execution["status"] = "Superseded"
        for stage in self.data["stages"].values():
            for action in stage["actions"].values():
                if action["execution_id"] == execution["id"] and action["status"] == "InProgress":
                    action.update(status="Abandoned", token="", last_change=now())
            if stage["execution_id"] == execution["id"] and stage["status"] == "InProgress":
                stage["status"] = "Stopped"

    def _action(self, execution: dict) -> dict:
        stage, action = ACTIONS[execution["step"]]
        return self.data["stages"][stage]["actions"][action]

    def _begun(self, execution: dict) -> bool:
        return self._action(execution)["execution_id"] == execution["id"]

    def _begin(self, execution: dict, summary: str = "", token: str = "") -> None:
        stage_name, _ = ACTIONS[execution["step"]]
        stage = self.data["stages"][stage_name]
        if stage["execution_id"] != execution["id"]:
            stage.update(status="InProgress", execution_id=execution["id"])
        self._action(execution).update(
            status="InProgress", summary=summary, token=token, last_change=now(), updated_by=""
        )
        self._action(execution)["execution_id"] = execution["id"]

    def _finish(self, execution: dict, summary: str = "", by: str = "") -> bool:
        """The current action Succeeded; the run moves to the next one."""
        stage_name, _ = ACTIONS[execution["step"]]
        self._action(execution).update(
            status="Succeeded", summary=summary, token="", last_change=now(), updated_by=by
        )
        execution["step"] += 1
        if execution["step"] == len(ACTIONS) or ACTIONS[execution["step"]][0] != stage_name:
            self.data["stages"][stage_name]["status"] = "Succeeded"
        if execution["step"] == len(ACTIONS):
            execution["status"] = "Succeeded"
        return True

    def _fail(self, execution: dict, summary: str, by: str = "") -> bool:
        """The current action, its stage and the run Failed, saying why."""
        stage_name, _ = ACTIONS[execution["step"]]
        self._action(execution).update(
            status="Failed", summary=summary, token="", last_change=now(), updated_by=by
        )
        self.data["stages"][stage_name]["status"] = "Failed"
        execution.update(status="Failed", summary=summary)
        return False

    # -- actions -----------------------------------------------------------------------------

    def _step(self, execution: dict) -> bool:
        """Run the current action as far as it goes now; True once the run moved past it."""
        step = execution["step"]
        if step == GATE_STEP:  # decided by `decide`, never by a tick
            if not self._begun(execution):
                self._begin(execution, GATE_SUMMARY, str(uuid.uuid4()))
            return False
        if not self._begun(execution):
            self._begin(execution)
        if step == 0:
            return self._source(execution)
        if step == 1:
            return self._build(execution)
        if step == 3:
            return self._test_staging(execution)
        return self._deploy(execution, "staging" if step == 2 else "prod")

    def _source(self, execution: dict) -> bool:
        try:
            execution["configs"] = {w: read_config(self.repo, w) for w in CONFIG_FILES}
        except ValueError as err:
            return self._fail(execution, str(err))
        return self._finish(execution)

    def _build(self, execution: dict) -> bool:
        group = self.data["group"]
        approved = [v for v in self.state.versions(group) if v.approval_status == APPROVED]
        if not approved:  # build.py's words
            return self._fail(
                execution, f"No approved ModelPackage found for ModelPackageGroup: {group}"
            )
        execution.update(version=approved[0].version, version_arn=approved[0].arn)
        return self._finish(execution, f"ModelPackageName: {approved[0].arn}")

    def _test_staging(self, execution: dict) -> bool:
        name = f"{self.data['name']}-staging"
        endpoint = self.hosting.describe(name)
        if endpoint is not None and endpoint.status == EndpointStatus.IN_SERVICE:
            return self._finish(execution)
        seen = endpoint.status if endpoint else "missing"
        return self._fail(execution, f"Endpoint {name} is {seen}, expected InService")

    def _request(self, execution: dict, which: str) -> DeployRequest:
        endpoint = f"{self.data['name']}-{which}"
        kind, count = execution["configs"][which]
        version = self.state.version_by_arn(execution["version_arn"])
        if version is None:
            raise TerminalError(f"model package {execution['version_arn']} does not exist")
        content = {"version": version.arn, "instanceType": kind, "instanceCount": count}
        config = naming.config_name(endpoint, content)
        stage = "staging" if which == "staging" else "production"
        return DeployRequest(stage, endpoint, config, version, kind, count)

    def _deploy(self, execution: dict, which: str) -> bool:
        """DeployResources<Stage>: the stack made or updated to the run's config, complete once
        the endpoint is InService on it."""
        if which not in execution["deploys"]:
            try:
                self._ask(execution, which)
            except TransientError:
                return False  # the endpoint is busy: ask again at the next tick
            except TerminalError as err:
                return self._fail(execution, str(err))
        return self._settle(execution, which)

    def _ask(self, execution: dict, which: str) -> None:
        request = self._request(execution, which)
        seen = self.hosting.describe(request.endpoint_name)
        stack = self.data["stacks"].get(which)
        creating = seen is None or stack is None or stack["status"] == "ROLLBACK_COMPLETE"
        if seen is not None and seen.status == EndpointStatus.FAILED:
            # A failed endpoint cannot be updated: the stack replaces it (REPLACE_ON_FAILURE).
            self.hosting.delete(request.endpoint_name)
            creating = True
        self.hosting.deploy(request)
        self.data["stacks"][which] = {
            "name": stack_name(self.data["name"], self.data["project_id"], which),
            "status": "CREATE_IN_PROGRESS" if creating else "UPDATE_IN_PROGRESS",
            "reason": "",
        }
        self.data["served"][request.config_name] = execution["version"]
        execution["deploys"][which] = request.config_name

    def _settle(self, execution: dict, which: str) -> bool:
        stack, config = self.data["stacks"][which], execution["deploys"][which]
        name = f"{self.data['name']}-{which}"
        creating = stack["status"].startswith("CREATE")
        endpoint = self.hosting.describe(name)
        if (
            endpoint
            and endpoint.status == EndpointStatus.IN_SERVICE
            and endpoint.config_name == config
        ):
            stack.update(status="CREATE_COMPLETE" if creating else "UPDATE_COMPLETE", reason="")
            return self._finish(execution)
        if endpoint is not None and EndpointStatus.is_transitional(endpoint.status):
            return False
        # Failed, or rolled back to the config it served before.
        reason = (endpoint.failure_reason if endpoint else "") or f"Endpoint {name} is missing"
        stack.update(status="ROLLBACK_COMPLETE" if creating else "UPDATE_ROLLBACK_COMPLETE")
        stack["reason"] = reason
        if creating and endpoint is not None:
            self.hosting.delete(name)  # a rolled back create deletes what it made
        return self._fail(execution, f"Stack {stack['name']} {stack['status']}: {reason}")

    # -- the gate ----------------------------------------------------------------------------

    def decide(self, execution_id: str, token: str, approve: bool, summary: str, by: str) -> None:
        """PutApprovalResult on DeployStaging/ApproveDeployment."""
        gate = self.data["stages"][STAGING_STAGE]["actions"][GATE_ACTION]
        pipeline = self.data["pipeline"]
        if gate["status"] != "InProgress":
            raise GateMoved(
                f"ApprovalAlreadyCompletedException: the approval of {pipeline} is"
                f" {gate['status'] or 'not waiting'}"
            )
        if token != gate["token"] or execution_id != gate["execution_id"]:
            raise GateMoved(
                f"InvalidApprovalTokenException: the token is not that of the approval waiting"
                f" in {pipeline} (execution {gate['execution_id']})"
            )
        execution = next(e for e in self.data["executions"] if e["id"] == execution_id)
        if approve:
            self._finish(execution, summary, by)
        else:
            self._fail(execution, summary, by)
