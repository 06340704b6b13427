"""`kubectl modeldeploy get NAME [--watch] [-o json|yaml]`: read the object and its Events,
draw them, and with --watch draw again whenever either changes (watch API) until Ctrl-C."""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from modeldeploy.gitops.kube import GROUP, PLURAL, VERSION, Kube, KubeError, api_message
from modeldeploy.plugin.colour import Palette
from modeldeploy.plugin.render import render_document, render_text
from modeldeploy.plugin.view import build_view

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
TICK_SECONDS = 5  # a terminal's ages move on even when nothing changes
WATCH_SECONDS = 300  # the server ends a watch after this; it is opened again


def snapshot(kube: Kube, name: str, namespace: str) -> dict:
    """The view document of `name` now: the object and the Events about it."""
    obj = kube.get(name, namespace)
    return build_view(obj, events(kube, obj))


def events(kube: Kube, obj: dict) -> list[dict]:
    meta = obj["metadata"]
    try:
        # Raw JSON rather than the client's models: the view reads the API's own field names.
        response = kube.core.list_namespaced_event(
            meta["namespace"],
            field_selector=f"involvedObject.uid={meta['uid']}",
            _preload_content=False,
        )
    except ApiException as err:
        if err.status == 403:
            return []  # allowed to read the object but not Events: show what can be shown
        raise KubeError(api_message(err)) from None
    return json.loads(response.data).get("items") or []


def show(kube: Kube, name: str, namespace: str, output: str | None, out: TextIO) -> int:
    view = snapshot(kube, name, namespace)
    out.write(_draw(view, output, Palette.for_stream(out)))
    return 0


def watch_view(kube: Kube, name: str, namespace: str, output: str | None, out: TextIO) -> int:
    """Redraw on every change of the object or its Events; Ctrl-C ends it (exit 0)."""
    palette = Palette.for_stream(out)
    terminal = palette.enabled or (out.isatty() if hasattr(out, "isatty") else False)
    changes: queue.Queue[object] = queue.Queue()
    obj = kube.get(name, namespace)  # fails early and clearly when there is no such object
    uid = obj["metadata"]["uid"]
    for target in (
        lambda: _stream_object(kube, name, namespace, changes),
        lambda: _stream_events(kube, uid, namespace, changes),
    ):
        threading.Thread(target=target, daemon=True).start()
    last = None
    try:
        while True:
            view = snapshot(kube, name, namespace)
            # Text on a terminal is redrawn whole; a pipe gets a new document only on a change.
            if terminal and output is None:
                out.write(CLEAR + _draw(view, output, palette))
                out.flush()
            elif view != last:
                text = _draw(view, output, palette)
                out.write(text if output != "json" else json.dumps(view) + "\n")
                if output == "yaml":
                    out.write("---\n")
                elif output is None:
                    out.write("\n")
                out.flush()
            last = view
            _wait(changes, TICK_SECONDS if terminal else None)
    except KeyboardInterrupt:
        out.write("\n")
        return 0


def _draw(view: dict, output: str | None, palette: Palette) -> str:
    return render_text(view, palette) if output is None else render_document(view, output)


def _wait(changes: queue.Queue[object], timeout: float | None) -> None:
    try:
        item = changes.get(timeout=timeout)
    except queue.Empty:
        return
    while True:  # one redraw for a burst of changes
        if isinstance(item, BaseException):
            raise item
        try:
            item = changes.get_nowait()
        except queue.Empty:
            return


def _stream(
    list_call: Callable, changes: queue.Queue[object], optional: bool = False, **kwargs
) -> None:
    """Put a token on `changes` for every watch event, reopening the watch as the server ends
    it; an error ends the watch and is raised in the drawing thread (a refused `optional`
    watch just ends: the view goes on without it)."""
    resource_version = None
    while True:
        watcher = watch.Watch()
        try:
            stream = watcher.stream(
                list_call,
                resource_version=resource_version,
                timeout_seconds=WATCH_SECONDS,
                **kwargs,
            )
            for event in stream:
                changes.put(event["type"])
            # The server closed the watch: open it again from where it was.
            resource_version = watcher.resource_version
        except ApiException as err:
            if err.status == 410:  # too old: start from now
                resource_version = None
                continue
            if optional and err.status == 403:
                return
            changes.put(KubeError(api_message(err)))
            return
        except Exception as err:  # a dropped connection ends the watch visibly
            changes.put(KubeError(f"watch ended: {err}"))
            return


def _stream_object(kube: Kube, name: str, namespace: str, changes: queue.Queue[object]) -> None:
    _stream(
        kube.objects.list_namespaced_custom_object,
        changes,
        group=GROUP,
        version=VERSION,
        namespace=namespace,
        plural=PLURAL,
        field_selector=f"metadata.name={name}",
    )


def _stream_events(kube: Kube, uid: str, namespace: str, changes: queue.Queue[object]) -> None:
    _stream(
        kube.core.list_namespaced_event,
        changes,
        optional=True,  # as in events(): one may read the object and not its Events
        namespace=namespace,
        field_selector=f"involvedObject.uid={uid}",
    )


def main_get(kube: Kube, name: str, output: str | None, follow: bool) -> int:
    if follow:
        return watch_view(kube, name, kube.namespace, output, sys.stdout)
    return show(kube, name, kube.namespace, output, sys.stdout)
