"""Bad parameters fail with Ansible's argument error naming the parameter, before any connection."""

from __future__ import annotations

from typing import Any

import pytest

CASES = [
    ("sapphire_redis_info", {"redis_port": "not-a-port"}, "redis_port"),
    ("sapphire_redis_info", {"redis_port": 70000}, "redis_port"),
    ("sapphire_redis_info", {"expected_role": "leader"}, "expected_role"),
    ("sapphire_redis_info", {"memory_fail_percent": 150}, "memory_fail_percent"),
    ("sapphire_redis_info", {"unknown_option": 1}, "unknown_option"),
    ("sapphire_postgres_info", {"postgres_sslmode": "maybe"}, "postgres_sslmode"),
    ("sapphire_postgres_info", {"min_standbys": -1}, "min_standbys"),
    ("sapphire_postgres_info", {"tables": "trades"}, None),
    ("sapphire_heartbeat_info", {}, "agents"),
    ("sapphire_heartbeat_info", {"agents": [{"tier": "standard"}]}, "agents"),
    ("sapphire_heartbeat_info", {"agents": [{"name": "a", "replicas": "many"}]}, "agents"),
    ("sapphire_heartbeat_info", {"agents": [], "max_age": 0}, "max_age"),
    ("sapphire_heartbeat_info", {"agents": [], "halt_status": "panic"}, "halt_status"),
    ("sapphire_circuit_breaker_info", {"half_open_status": "maybe"}, "half_open_status"),
    ("sapphire_market_data_info", {"max_age_overrides": {"BTC/USDT": "soon"}}, "max_age_overrides"),
    ("sapphire_market_data_info", {"max_age": -5}, "max_age"),
    ("sapphire_risk_info", {"max_daily_loss_percent": 0}, "max_daily_loss_percent"),
    ("sapphire_risk_info", {"max_hourly_loss": "lots"}, "max_hourly_loss"),
    ("sapphire_alerts_info", {}, "url"),
    ("sapphire_alerts_info", {"url": "ftp://prometheus"}, "url"),
    ("sapphire_coordinator_info", {"url": "127.0.0.1:8000"}, "url"),
    ("sapphire_trading_info", {"checks": ["everything"]}, "checks"),
    ("sapphire_trading_info", {"coordinator_url": "127.0.0.1:8000"}, "coordinator_url"),
    ("sapphire_trading_info", {"agents": [{"tier": "standard"}]}, "agents"),
    ("sapphire_trading_info", {"market_data_max_age_overrides": {"BTC/USDT": "soon"}}, "market_data_max_age_overrides"),
    ("sapphire_trading_info", {"market_data_max_age": 0}, "market_data_max_age"),
    ("sapphire_trading_info", {"postgres_port": 70000}, "postgres_port"),
    ("sapphire_trading_info", {"max_daily_loss_percent": 0}, "max_daily_loss_percent"),
    ("sapphire_trading_info", {"expected": ["exchange"]}, "expected"),
    ("sapphire_namespace_info", {"quota_fail_percent": 120}, "quota_fail_percent"),
    ("sapphire_namespace_info", {"request_timeout": "slow"}, "request_timeout"),
]


@pytest.mark.parametrize(("module", "args", "parameter"), CASES)
def test_bad_parameter_is_rejected_naming_it(module_runner: Any, module: str, args: dict[str, Any],
                                             parameter: str | None) -> None:
    result = module_runner(module, args)
    if parameter is None:  # accepted after Ansible's own conversion (a string becomes a one-item list)
        assert not result.get("failed"), result
        return
    assert result.get("failed") is True, result
    assert parameter in result["msg"]
    assert "checks" not in result  # rejected before any check ran


def test_password_is_never_echoed(module_runner: Any) -> None:
    result = module_runner("sapphire_redis_info", {"redis_port": 1, "redis_password": "hunter2-secret",
                                                   "connect_timeout": 0.5})
    assert result["healthy"] is False
    assert "hunter2-secret" not in str(result)
