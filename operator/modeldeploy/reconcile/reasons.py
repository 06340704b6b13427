"""The reconciler's vocabulary: phases, and the reasons of conditions and Events.

An Event's reason is the reason of the condition it reports (Flux's rule), so both come from
this one table.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    REGISTERING = "Registering"
    PENDING_APPROVAL = "PendingApproval"
    REJECTED = "Rejected"
    DEPLOYING_STAGING = "DeployingStaging"
    TESTING = "Testing"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTING = "Promoting"
    DEPLOYED = "Deployed"
    FAILED = "Failed"


class Reason(StrEnum):
    # Registration
    CREATING_GROUP = "CreatingGroup"
    GROUP_READY = "GroupReady"
    ADOPTING_GROUP = "AdoptingGroup"
    GROUP_ADOPTED = "GroupAdopted"
    GROUP_OWNED_ELSEWHERE = "GroupOwnedElsewhere"
    GROUP_NOT_ADOPTED = "GroupNotAdopted"
    REGISTERING = "Registering"
    REGISTERED = "Registered"
    NO_MODEL_VERSION = "NoModelVersion"
    NEW_VERSION = "NewVersion"
    # Approval
    APPROVING = "Approving"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVAL_CHANGED = "ApprovalChanged"
    # Stages
    DEPLOYING = "Deploying"
    DEPLOYING_STAGING = "DeployingStaging"
    NO_APPROVED_VERSION = "NoApprovedVersion"
    TESTING = "Testing"
    SMOKE_TEST_PASSED = "SmokeTestPassed"
    IN_SERVICE = "InService"
    STAGING_IN_SERVICE = "StagingInService"
    PRODUCTION_IN_SERVICE = "ProductionInService"
    ENDPOINT_MISSING = "EndpointMissing"
    ENDPOINT_REPAIRING = "EndpointRepairing"
    DELETING_ENDPOINT = "DeletingEndpoint"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTION_BLOCKED = "PromotionBlocked"
    PROMOTING = "Promoting"
    DEPLOYED = "Deployed"
    # Project mode
    CREATING_PROJECT = "CreatingProject"
    PROJECT_PIPELINE = "ProjectPipeline"  # the project's pipeline is running
    STAGING_NOT_NEWEST = "StagingNotNewest"
    APPROVING_GATE = "ApprovingGate"
    REJECTING_GATE = "RejectingGate"
    GATE_DECIDED = "GateDecided"
    GATE_MOVED = "GateMoved"
    RUN_SUPERSEDED = "RunSuperseded"
    PROJECT_FAILED = "ProjectFailed"
    PROJECT_OWNED_ELSEWHERE = "ProjectOwnedElsewhere"
    PIPELINE_FAILED = "PipelineFailed"
    # Failures: each stalls its input until the spec changes
    INVALID_SPEC = "InvalidSpec"
    GROUP_CREATION_FAILED = "GroupCreationFailed"
    REGISTRATION_FAILED = "RegistrationFailed"
    APPROVAL_FAILED = "ApprovalFailed"
    DEPLOYMENT_FAILED = "DeploymentFailed"
    DELETION_FAILED = "DeletionFailed"
    SMOKE_TEST_FAILED = "SmokeTestFailed"
    ACTION_FAILED = "ActionFailed"
    # Remote state the provider will not show: stalled, looked at again at each resync
    REMOTE_ERROR = "RemoteError"
    # The platform policy refuses a role, location or region: judged again every pass
    POLICY_DENIED = "PolicyDenied"
    # Retried with backoff
    RETRYING = "RetryingAfterError"
    TRANSIENT_ERROR = "TransientError"
    # Deletion
    RETAINED = "Retained"
    DELETED = "Deleted"


def in_service(stage: str) -> Reason:
    return Reason.PRODUCTION_IN_SERVICE if stage == "production" else Reason.STAGING_IN_SERVICE
