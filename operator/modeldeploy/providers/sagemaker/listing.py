"""Paginated SageMaker listings: every item of a List* call, and what the listing cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PAGE = 100  # the most SageMaker's List* calls return per call


def list_all(call: Callable[..., dict], key: str, **filters: Any) -> tuple[list[dict], int]:
    """Every item under `key` of `call(**filters)`, page after page, and how many pages it took
    (callers weigh a listing against describes by its pages)."""
    items: list[dict] = []
    kwargs: dict[str, Any] = {**filters, "MaxResults": PAGE}
    pages = 0
    while True:
        page = call(**kwargs)
        pages += 1
        items += page.get(key, [])
        if not page.get("NextToken"):
            return items, pages
        kwargs["NextToken"] = page["NextToken"]


def endpoint_statuses(sm: Any, **filters: Any) -> dict[str, str]:
    """Endpoint name -> status from ListEndpoints with `filters`."""
    items, _ = list_all(sm.list_endpoints, "Endpoints", **filters)
    return {item["EndpointName"]: item.get("EndpointStatus", "") for item in items}
