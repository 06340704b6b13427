"""Actions the planner asks for. Plain data: the executor turns them into provider calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Stage = Literal["staging", "production"]


@dataclass(frozen=True)
class EnsureGroup:
    name: str
    description: str | None


@dataclass(frozen=True)
class RegisterVersion:
    artifact: str


@dataclass(frozen=True)
class SetApproval:
    version: int
    version_arn: str
    status: str  # Approved | Rejected
    description: str


@dataclass(frozen=True)
class DeployEndpoint:
    stage: Stage
    endpoint_name: str
    config_name: str  # content-hash name: immutable, so a change is a new config
    model_name: str
    version: int
    version_arn: str
    image: str
    artifact: str
    instance_type: str
    instance_count: int
    data_capture_percent: int = 0
    data_capture_destination: str | None = None
    update: bool = False  # the endpoint exists: UpdateEndpoint instead of CreateEndpoint


@dataclass(frozen=True)
class SmokeTest:
    endpoint_name: str
    version: int
    config_name: str
    payload: str
    content_type: str
    max_latency_ms: int


@dataclass(frozen=True)
class DeleteEndpoint:
    stage: Stage
    endpoint_name: str


Action = EnsureGroup | RegisterVersion | SetApproval | DeployEndpoint | SmokeTest | DeleteEndpoint

MUTATING = (EnsureGroup, RegisterVersion, SetApproval, DeployEndpoint, DeleteEndpoint)
