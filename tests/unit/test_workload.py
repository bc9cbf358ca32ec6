"""The synthetic workload's pure parts: agent loading, bounded P&L, metrics exposition."""

from __future__ import annotations

import random

import pytest
from ansible.module_utils.sapphire_connections import parse_prometheus_text
from sapphire_workload.cli import parse_args
from sapphire_workload.metrics import Registry
from sapphire_workload.writer import MAX_TRADE_PNL, PNL_BAND, load_agents, next_pnl


def test_agents_load_from_the_trading_agents_shape() -> None:
    agents = load_agents([{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 2,
                           "extra": True}, {"name": "volatility", "replicas": 0}])
    assert [(a.name, a.tier, a.replicas) for a in agents] == [("momentum", "standard", 2),
                                                              ("volatility", "standard", 0)]
    with pytest.raises(ValueError, match=r"agents\[1\] has no name"):
        load_agents([{"name": "a"}, {"tier": "heavy"}])
    with pytest.raises(ValueError, match="JSON list"):
        load_agents({"name": "a"})


def test_session_pnl_stays_in_its_band_so_the_workload_never_breaches_the_loss_limits() -> None:
    rng = random.SystemRandom()
    session, lowest = 0.0, 0.0
    for _ in range(200_000):
        pnl = next_pnl(rng, session)
        assert abs(pnl) <= MAX_TRADE_PNL
        session += pnl
        lowest = min(lowest, session)
    assert -PNL_BAND - MAX_TRADE_PNL <= lowest
    # the worst loss over any window is bounded by the band's width, far below the 1000 USD limit
    assert 2 * PNL_BAND + MAX_TRADE_PNL < 1000


def test_metrics_render_as_valid_prometheus_text() -> None:
    registry = Registry()
    registry.describe("http_request_duration_seconds", "histogram", "latency")
    registry.set("portfolio_value", 100000.25)
    registry.inc("http_requests_total", labels={"path": "/health", "status": "500"})
    registry.inc("http_requests_total", labels={"path": "/health", "status": "500"})
    registry.observe("http_request_duration_seconds", 0.3, labels={"path": "/health"})
    samples = parse_prometheus_text(registry.render())
    assert samples["portfolio_value"] == [({}, 100000.25)]
    assert samples["http_requests_total"] == [({"path": "/health", "status": "500"}, 2.0)]
    buckets = {labels["le"]: value for labels, value in samples["http_request_duration_seconds_bucket"]}
    assert buckets["0.25"] == 0 and buckets["0.5"] == 1 and buckets["+Inf"] == 1


@pytest.mark.parametrize("argv", [["--agents", "a.json", "--redis-url", "redis://:pw@127.0.0.1:6379/0"],
                                  ["--agents", "a.json", "--port", "0"], ["--agents", "a.json", "--interval", "0"]])
def test_cli_rejects_a_password_in_argv_and_bad_numbers(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
