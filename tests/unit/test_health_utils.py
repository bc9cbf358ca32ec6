"""The shared result shape: healthy and problems follow from the checks."""

from __future__ import annotations

import pytest
from ansible.module_utils.sapphire_connections import parse_prometheus_text
from ansible.module_utils.sapphire_health import by_level, check, fail, finish, new_result, ok, skipped, warn, worst


@pytest.mark.parametrize(("value", "expected"), [(10, "ok"), (79.9, "ok"), (80, "warn"), (89.9, "warn"), (90, "fail"),
                                                 (150, "fail")])
def test_by_level_compares_with_both_thresholds(value: float, expected: str) -> None:
    assert by_level("quota", value, 80, 90, "cpu")["status"] == expected


def test_finish_fails_only_on_failing_checks_and_lists_warnings_as_problems() -> None:
    result = new_result("redis 127.0.0.1:6379")
    result["checks"] = [ok("a", "fine"), warn("b", "memory high"), skipped("c", "n/a")]
    assert finish(result)["healthy"] is True
    assert result["problems"] == ["redis 127.0.0.1:6379: memory high"]
    result["checks"].append(fail("d", "AOF disabled"))
    finish(result)
    assert result["healthy"] is False
    assert result["changed"] is False
    assert "redis 127.0.0.1:6379: AOF disabled" in result["problems"]


def test_skeleton_has_every_documented_key_before_any_check() -> None:
    result = new_result()
    assert set(result) >= {"changed", "healthy", "checks", "problems"}
    assert finish(result)["healthy"] is True


def test_worst_and_bad_status() -> None:
    assert worst([ok("a", ""), warn("b", ""), skipped("c", "")]) == "warn"
    with pytest.raises(ValueError, match="status"):
        check("x", "broken", "msg")


def test_prometheus_parser_reads_labels_and_rejects_garbage() -> None:
    text = ('# HELP portfolio_value x\n# TYPE portfolio_value gauge\nportfolio_value 100000.5\n'
            'http_requests_total{method="GET",path="/health",status="200"} 3 1700000000000\n'
            'x_bucket{le="+Inf"} 1\nweird{a="quo\\"te"} NaN\n')
    samples = parse_prometheus_text(text)
    assert samples["portfolio_value"] == [({}, 100000.5)]
    assert samples["http_requests_total"][0][0]["status"] == "200"
    assert samples["weird"][0][0]["a"] == 'quo"te'  # unescaped, as Prometheus reads it
    assert samples["x_bucket"] == [({"le": "+Inf"}, 1.0)]
    with pytest.raises(ValueError, match="not the Prometheus text format: invalid metric name"):
        parse_prometheus_text("<html>not metrics</html>")
    with pytest.raises(ValueError, match="not the Prometheus text format"):
        parse_prometheus_text('decision_latency_seconds{agent="momentum"} fast\n')


def test_prometheus_parser_unescapes_backslashes_and_newlines_in_label_values() -> None:
    """Label values with an escaped newline and backslash come back as the characters they stand for."""
    samples = parse_prometheus_text('trades_total{agent="a\\\\b",note="line\\nbreak"} 7\n')
    assert samples["trades_total"] == [({"agent": "a\\b", "note": "line\nbreak"}, 7.0)]
