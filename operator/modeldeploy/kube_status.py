"""Writing a ModelDeployment's status, from every handler and the pacing daemon alike.

kopf applies a handler's patch some time after the handler returns, and a daemon never returns
between passes; so both write status through the Kubernetes client kopf logged in with
(handlers.login), under the object's lock, and a write never lands after a newer one.
"""

from __future__ import annotations

import logging

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modeldeploy.gitops.kube import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"  # null removes a key, as handlers.status_patch says

log = logging.getLogger(__name__)


class StatusWriter:
    """Merges status patches through one API client (one connection pool for every object)."""

    def __init__(self) -> None:
        self._api: client.CustomObjectsApi | None = None  # made after kopf has logged in

    def patch(self, body: kopf.Body, status: dict) -> bool:
        """Merge `status` into the object's status subresource; False when it was not written."""
        meta = body.metadata
        self._api = self._api or client.CustomObjectsApi()
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta.namespace,
                PLURAL,
                meta.name,
                {"status": status},
                _content_type=MERGE_PATCH,
            )
        except ApiException as err:
            if err.status != 404:  # gone: nothing to write to
                log.warning(
                    "status of %s/%s not written: %s %s",
                    meta.namespace,
                    meta.name,
                    err.status,
                    err.reason,
                )
            return False
        return True
