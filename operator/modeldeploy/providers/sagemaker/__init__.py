"""The `sagemaker` provider: SageMaker Model Registry (`registry`) and hosting (`hosting`)."""

from modeldeploy.providers.sagemaker.provider import SageMakerProvider

__all__ = ["SageMakerProvider"]
