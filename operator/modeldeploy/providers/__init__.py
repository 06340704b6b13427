"""Provider selection: one instance per (provider, region), built on first use.

`ProviderFactory(read_only=True)` builds providers for previews (`modeldeploy plan`): their
observe() changes nothing. The sagemaker provider's observe only reads anyway; the local
provider's would otherwise supervise its endpoints (start, stop, roll back, record).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

from modeldeploy.providers.interface import Provider
from modeldeploy.spec import ModelDeploymentSpec, SpecError

Builder = Callable[[ModelDeploymentSpec, bool], Provider]  # (spec, read_only)


def environment_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _sagemaker(spec: ModelDeploymentSpec, read_only: bool) -> Provider:
    from modeldeploy.providers.sagemaker import SageMakerProvider

    region = spec.region or environment_region()
    if not region:
        raise SpecError("spec.region is required for the sagemaker provider (or set AWS_REGION)")
    if not read_only:  # its first registration needs the region's image table, seconds from now
        from modeldeploy.artifacts.compat import prefetch_image_uris

        prefetch_image_uris(region)
    return SageMakerProvider(region=region)


def _local(spec: ModelDeploymentSpec, read_only: bool) -> Provider:
    from modeldeploy.providers.local import LocalProvider

    workers = int(os.environ.get("MODELDEPLOY_LOCAL_WORKERS", "1"))
    return LocalProvider(workers=workers, supervise=not read_only)


BUILDERS: dict[str, Builder] = {"sagemaker": _sagemaker, "local": _local}


class ProviderFactory:
    def __init__(
        self,
        default: str | None = None,
        builders: dict[str, Builder] | None = None,
        *,
        read_only: bool = False,
    ):
        # The embedded `local` provider unless the deployment says otherwise (the chart does).
        self.default = default or os.environ.get("MODELDEPLOY_DEFAULT_PROVIDER", "local")
        self.read_only = read_only
        self._builders = builders or BUILDERS
        self._cache: dict[tuple, Provider] = {}
        # Passes run in kopf's executor threads: two resources must not build one provider twice.
        self._lock = threading.Lock()

    def get(self, spec: ModelDeploymentSpec) -> Provider:
        name = spec.provider or self.default
        if name not in self._builders:
            raise SpecError(
                f"spec.provider: {name!r} is not available in this operator "
                f"(available: {', '.join(sorted(self._builders))})"
            )
        # Not the role: that is each endpoint's identity, carried by its DeployRequest. The
        # credentials are the operator's own, so one provider (its clients, caches and views)
        # serves every resource of a region.
        # A sagemaker spec without a region is in the environment's: one provider for both.
        region = spec.region or (environment_region() if name == "sagemaker" else None)
        key = (name, region)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._builders[name](spec, self.read_only)
            return self._cache[key]

    def warm(self) -> None:
        """Build the default sagemaker provider of the environment's region in the background:
        its clients take a moment to load their service models, and the first resources would
        all wait for it."""
        if self.default != "sagemaker" or self.read_only or not environment_region():
            return
        spec = ModelDeploymentSpec.model_construct(provider=None, region=None)
        threading.Thread(target=self._warm, args=(spec,), daemon=True).start()

    def _warm(self, spec: ModelDeploymentSpec) -> None:
        with contextlib.suppress(Exception):  # the first pass that needs it reports it
            self.get(spec)

    def built(self) -> list[Provider]:
        """The providers built so far (to stop what they started, for instance)."""
        with self._lock:
            return list(self._cache.values())
