"""modeldeploy: GitOps delivery of bring-your-own XGBoost models."""

__version__ = "0.1.0"
