"""Logging in to the API server with connection pools sized for the work.

kopf's own session opens connections without limit (`TCPConnector(limit=0)`): a thousand
ModelDeployments applied at once meant a thousand concurrent PATCHes, each its own TLS
connection with a 256 KiB read buffer, and the memory was never returned (0.45 MiB per
resource at N=1000). The kubernetes client that writes the daemon's status patches kept ten
connections for sixteen worker threads, so six were made and discarded again, a TLS handshake
each. Here both are sized once, at login.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import aiohttp
import kopf
from kubernetes import client

# Requests kopf has in flight at once, beyond its long-lived watch streams.
DEFAULT_CONNECTIONS = 32


def connection_limit(namespaces: Sequence[str] = ()) -> int:
    """MODELDEPLOY_API_CONNECTIONS (32 by default) plus one per watch stream kopf keeps open
    (the resource, peering, one per namespace named); 0 (no limit, kopf's own behaviour) with
    a namespace pattern, whose watch streams are as many as the namespaces it matches."""
    if any(ch in ns for ns in namespaces for ch in "*?!,"):
        return 0
    extra = int(os.environ.get("MODELDEPLOY_API_CONNECTIONS", DEFAULT_CONNECTIONS))
    return max(1, extra) + 2 + len(namespaces)


def bounded_session(info: kopf.ConnectionInfo, limit: int) -> kopf.AiohttpSession:
    """The session kopf would make for `info`, with at most `limit` connections."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),  # basic auth too, as a header
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


def size_client_pool(connections: int) -> None:
    """Let the kubernetes client keep a connection per worker thread that writes through it."""
    config = client.Configuration.get_default_copy()
    config.connection_pool_maxsize = max(config.connection_pool_maxsize or 0, connections)
    client.Configuration.set_default(config)
