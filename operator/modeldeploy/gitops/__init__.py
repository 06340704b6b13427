"""Decisions as commits: approve, reject, promote and roll back by changing one spec field,
either in a manifest in git (`manifest.py`) or on the live object by server-side apply
(`live.py`), never behind the back of Argo CD or Flux."""
