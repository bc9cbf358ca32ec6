"""The Sapphire alert rules (roles/monitoring) proven with promtool, and Alertmanager's routing.

The rules template is rendered exactly as the role renders it (variables in [[ ]], the role
defaults as values), then `promtool check rules` and `promtool test rules` run against the
unit tests in roles/monitoring/files/tests/. Each alert must have a case that fires and a case
that stays quiet. promtool and amtool come from `tools/setup-packages` (Debian's prometheus and
prometheus-alertmanager packages).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "monitoring"
RULES_TEMPLATE = ROLE / "templates" / "rules" / "sapphire-alerts.rules.yml.j2"
RULE_TESTS = ROLE / "files" / "tests" / "sapphire-alerts.test.yml"
ALERTMANAGER_TEMPLATE = ROLE / "templates" / "alertmanager.yml.j2"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed; run tools/setup-packages")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed; run tools/setup-packages")

# The seeds' alert table (001 and 004, plus the operational alerts of the brief): severity and `for`.
SEED_ALERTS = {
    "HighErrorRate": ("critical", "5m"),
    "HighLatency": ("warning", "5m"),
    "TradingLoss": ("critical", None),
    "PortfolioDailyLoss": ("critical", None),
    "RedisDown": ("critical", "2m"),
    "PostgreSQLDown": ("critical", "2m"),
    "HighMemoryUsage": ("warning", "5m"),
    "HighCPUUsage": ("warning", "10m"),
    "CircuitBreakerOpen": ("critical", None),
    "ResourceQuotaNearExhaustion": ("warning", None),
    "AgentHeartbeatMissing": ("critical", None),
    "BackupStale": ("warning", None),
}


def role_defaults() -> dict[str, Any]:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def render_rules(overrides: dict[str, Any] | None = None) -> str:
    """Render the rules template the way the role does (template module, [[ ]] delimiters)."""
    env = jinja2.Environment(variable_start_string="[[", variable_end_string="]]", trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(enabled_extensions=(), default_for_string=False))
    values = {**role_defaults(), **(overrides or {})}
    return env.from_string(RULES_TEMPLATE.read_text()).render(**values)


def render_alertmanager(overrides: dict[str, Any] | None = None) -> str:
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(enabled_extensions=(), default_for_string=False))
    env.filters["to_json"] = json.dumps
    values = {**role_defaults(), "ansible_managed": "test", "__monitoring_target": "host",
              "__monitoring_telegram_token_file": "/run/token", **(overrides or {})}
    return env.from_string(ALERTMANAGER_TEMPLATE.read_text()).render(**values)


def write_rule_suite(directory: Path, rules: str) -> Path:
    (directory / "sapphire-alerts.rules.yml").write_text(rules)
    shutil.copy(RULE_TESTS, directory / RULE_TESTS.name)
    return directory / RULE_TESTS.name


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return yaml.safe_load(render_rules())


def alerts_of(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


@needs_promtool
def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    path = tmp_path / "sapphire-alerts.rules.yml"
    path.write_text(render_rules())
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_and_stays_quiet_as_the_unit_tests_expect(tmp_path: Path) -> None:
    suite = write_rule_suite(tmp_path, render_rules())
    result = promtool("test", "rules", suite.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize(("variable", "value"), [
    ("monitoring_alert_error_rate_ratio", 0.2),
    ("monitoring_alert_trading_loss_usd", 2000),
    ("monitoring_alert_backup_max_age_seconds", 200000),
    ("monitoring_alert_heartbeat_max_age_seconds", 900),
    ("monitoring_alert_redis_down_for", "10m"),
])
def test_thresholds_come_from_the_role_variables(tmp_path: Path, variable: str, value: Any) -> None:
    """Changing a threshold variable changes the rules: the seed-number unit tests then fail."""
    suite = write_rule_suite(tmp_path, render_rules({variable: value}))
    result = promtool("test", "rules", suite.name, cwd=tmp_path)
    assert result.returncode != 0, f"the rule tests still pass with {variable}={value}; is the variable used?"


def test_every_alert_has_a_firing_and_a_quiet_case(rules: dict[str, Any]) -> None:
    suite = yaml.safe_load(RULE_TESTS.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts_of(rules))
    assert names - fires == set(), "alerts without a test proving they fire"
    assert names - quiet == set(), "alerts without a test proving they stay quiet"
    assert (fires | quiet) - names == set(), "tests name alerts that do not exist (an empty exp_alerts would pass)"


def test_the_seed_alerts_exist_with_their_severity_and_duration(rules: dict[str, Any]) -> None:
    alerts = alerts_of(rules)
    for name, (severity, duration) in SEED_ALERTS.items():
        assert name in alerts, f"seed alert {name} is missing"
        assert alerts[name]["labels"]["severity"] == severity, name
        if duration:
            assert alerts[name]["for"] == duration, name
        assert alerts[name]["annotations"]["summary"], name


def test_backup_alert_covers_every_component_when_absent(rules: dict[str, Any]) -> None:
    expr = alerts_of(rules)["BackupStale"]["expr"]
    for component in role_defaults()["monitoring_backup_components"]:
        assert f'absent(sapphire_backup_last_success_timestamp_seconds{{component="{component}"}})' in expr


def amtool_route(config: Path, *labels: str) -> str:
    result = subprocess.run([str(AMTOOL), "config", "routes", "test", f"--config.file={config}", *labels],
                            capture_output=True, text=True, timeout=60)
    return result.stdout.strip()


@needs_amtool
def test_alertmanager_routes_critical_to_the_pager_and_warning_to_chat(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager({"monitoring_pager_webhook_url": "http://pager.example/hook",
                                           "monitoring_chat_webhook_url": "http://chat.example/hook"}))
    check = subprocess.run([str(AMTOOL), "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert amtool_route(config, "alertname=TradingLoss", "severity=critical") == "pager"
    assert amtool_route(config, "alertname=HighLatency", "severity=warning") == "chat"
    receivers = {receiver["name"]: receiver for receiver in yaml.safe_load(config.read_text())["receivers"]}
    assert receivers["pager"]["webhook_configs"][0]["url"] == "http://pager.example/hook"


@needs_amtool
def test_alertmanager_kubernetes_config_reads_the_telegram_token_from_a_file() -> None:
    config = yaml.safe_load(render_alertmanager({"monitoring_telegram_chat_id": -100123,
                                                 "__monitoring_target": "kubernetes"}))
    chat = next(receiver for receiver in config["receivers"] if receiver["name"] == "chat")
    telegram = chat["telegram_configs"][0]
    assert telegram["chat_id"] == -100123
    assert telegram["bot_token_file"] == "/run/token"
    assert "bot_token" not in telegram
