"""modeldeploy.peering: flags and environment into kopf's peering settings."""

from __future__ import annotations

import kopf
import pytest

from modeldeploy import peering
from modeldeploy.cli import build_parser


def parse(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_default_is_standalone() -> None:
    peers = peering.from_args(parse(), environ={})
    assert peers.standalone
    assert peers.operator_kwargs() == {"standalone": True}


def test_flags_win_over_the_environment() -> None:
    env = {peering.ENV_NAME: "env", peering.ENV_PRIORITY: "5", peering.ENV_LIFETIME: "20"}
    peers = peering.from_args(
        parse("--peering", "cli", "--peering-priority", "7", "--peering-lifetime", "8"),
        environ=env,
    )
    assert (peers.name, peers.priority, peers.lifetime) == ("cli", 7, 8)
    assert peering.from_args(parse(), environ=env) == peering.Peering("env", 5, 20)
    assert peers.operator_kwargs() == {"standalone": False, "peering_name": "cli", "priority": 7}


def test_derived_priorities_rank_the_oldest_first() -> None:
    older = peering.from_args(parse("--peering", "p"), environ={}, now_ns=1_700_000_000_000_000_000)
    newer = peering.from_args(parse("--peering", "p"), environ={}, now_ns=1_700_000_000_000_001_000)
    assert older.priority > newer.priority
    assert abs(older.priority) < 2**53
    assert older.lifetime == peering.DEFAULT_LIFETIME


@pytest.mark.parametrize(
    "env", [{peering.ENV_LIFETIME: "5"}, {peering.ENV_PRIORITY: "high"}], ids=["short", "nan"]
)
def test_bad_values_stop_the_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        peering.from_args(parse(), environ={peering.ENV_NAME: "p", **env})


def test_configure_sets_the_lifetime() -> None:
    settings = kopf.OperatorSettings()
    peering.configure(settings, peering.Peering("p", 1, 14))
    assert settings.peering.lifetime == 14
    assert settings.peering.stealth
