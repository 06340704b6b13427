"""The embedded `local` provider (`provider.LocalProvider`): the whole pipeline on one machine."""

from modeldeploy.providers.local.provider import (
    HOSTING_ENV,
    RESYNC_ENV,
    LocalProvider,
    default_root,
)

__all__ = ["HOSTING_ENV", "RESYNC_ENV", "LocalProvider", "default_root"]
