"""`kubectl modeldeploy get` in project mode: the project's pipeline, as status mirrors it, in
the document (key `pipeline`) and in the text (section PIPELINE)."""

from __future__ import annotations

from modeldeploy.plugin.colour import Palette
from modeldeploy.plugin.render import render_text
from modeldeploy.plugin.view import build_view

RUN = "a333e782-af4e-4dee-8e80-bbbf6456d000"
PROJECT = {  # as the operator wrote it in the end-to-end test, waiting at the gate
    "name": "bc",
    "id": "p-r0h9i8tobtqy",
    "status": "CreateCompleted",
    "pipeline": "sagemaker-bc-p-r0h9i8tobtqy-modeldeploy",
    "execution": {"id": RUN, "status": "InProgress"},
    "stages": [
        {"name": "Source", "status": "Succeeded", "executionId": RUN,
         "actions": [{"name": "ModelDeployInfraCode", "status": "Succeeded"}]},
        {"name": "Build", "status": "Succeeded", "executionId": RUN,
         "actions": [{"name": "BuildDeploymentTemplates", "status": "Succeeded"}]},
        {"name": "DeployStaging", "status": "InProgress", "executionId": RUN,
         "actions": [
             {"name": "DeployResourcesStaging", "status": "Succeeded"},
             {"name": "TestStaging", "status": "Succeeded"},
             {"name": "ApproveDeployment", "status": "InProgress",
              "summary": "Approve this model for Production"},
         ]},
        {"name": "DeployProd", "actions": [{"name": "DeployResourcesProd"}]},
    ],
    "gate": {"executionId": "older-run", "version": 1, "decision": "Approved", "by": "modeldeploy"},
}  # fmt: skip


def view(status: dict) -> dict:
    obj = {
        "metadata": {"name": "bc", "namespace": "ml", "generation": 2},
        "spec": {},
        "status": status,
    }
    return build_view(obj, [])


def test_the_document_carries_the_pipeline() -> None:
    pipeline = view({"project": PROJECT, "observedGeneration": 2})["pipeline"]
    assert (pipeline["name"], pipeline["run"], pipeline["runStatus"]) == (
        PROJECT["pipeline"],
        RUN,
        "InProgress",
    )
    assert [s["name"] for s in pipeline["stages"]] == [
        "Source",
        "Build",
        "DeployStaging",
        "DeployProd",
    ]
    gate = pipeline["stages"][2]["actions"][2]
    assert gate == {
        "name": "ApproveDeployment",
        "status": "InProgress",
        "summary": "Approve this model for Production",
    }
    assert pipeline["lastDecision"] == {
        "run": "older-run",
        "version": 1,
        "decision": "Approved",
        "by": "modeldeploy",
    }


def test_the_text_shows_where_the_pipeline_waits() -> None:
    text = render_text(view({"project": PROJECT}), Palette(enabled=False))
    section = text.split("PIPELINE\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section == [
        f"  sagemaker-bc-p-r0h9i8tobtqy-modeldeploy (CreateCompleted) run {RUN} InProgress",
        "  Source Succeeded -> Build Succeeded -> DeployStaging InProgress -> DeployProd -",
        "    DeployStaging/ApproveDeployment InProgress: Approve this model for Production",
        "  last gate decision: Approved version 1 (run older-run) by modeldeploy",
    ]


def test_direct_mode_has_no_pipeline() -> None:
    assert view({})["pipeline"] is None
    assert "PIPELINE" not in render_text(view({}), Palette(enabled=False))
