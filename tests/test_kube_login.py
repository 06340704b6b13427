"""The API connections the operator keeps: kopf's session bounded, the kubernetes client's pool
sized for the worker threads (issue 12: a connection per resource was never given back)."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from kubernetes import client

from modeldeploy import kube_login


def test_the_limit_leaves_room_for_each_watch_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELDEPLOY_API_CONNECTIONS", raising=False)
    assert kube_login.connection_limit() == kube_login.DEFAULT_CONNECTIONS + 2
    assert kube_login.connection_limit(["a", "b"]) == kube_login.DEFAULT_CONNECTIONS + 4
    monkeypatch.setenv("MODELDEPLOY_API_CONNECTIONS", "8")
    assert kube_login.connection_limit(["a"]) == 11
    # a pattern watches as many namespaces as it matches: kopf's own unbounded session
    assert kube_login.connection_limit(["team-*"]) == 0


def test_the_session_is_kopfs_own_with_a_bounded_connector() -> None:
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", token="t", default_namespace="x")

    async def make() -> tuple[int, dict, str]:
        made = kube_login.bounded_session(info, 7)
        try:
            session = made.aiohttp_session
            return session.connector.limit, dict(session.headers), made.server  # type: ignore[union-attr]
        finally:
            await made.aiohttp_session.close()

    limit, headers, server = asyncio.run(make())
    assert (limit, headers["Authorization"], server) == (7, "Bearer t", info.server)


def test_the_client_pool_holds_a_connection_per_worker() -> None:
    before = client.Configuration.get_default_copy()
    try:
        kube_login.size_client_pool(40)
        assert client.Configuration.get_default_copy().connection_pool_maxsize == 40
        kube_login.size_client_pool(2)  # never made smaller than the client's own default
        assert client.Configuration.get_default_copy().connection_pool_maxsize == 40
    finally:
        client.Configuration.set_default(before)
