"""library/sapphire_emergency_stop.py: the decisions of the kill switch (the scale patches that keep the counts, which
priority classes the quota refuses) and its refusal to guess where no Redis is given. The module against a real API
server and Redis: tests/integration/test_emergency_stop.py."""

from __future__ import annotations

from typing import Any

from conftest import load_module

stop = load_module("sapphire_emergency_stop")


def deployment(name: str, replicas: int, annotations: dict[str, str] | None = None, component: str = "agent",
               priority: str = "") -> dict[str, Any]:
    return {"kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns", "annotations": annotations or {},
                         "labels": {"app.kubernetes.io/component": component}},
            "spec": {"replicas": replicas, "template": {"spec": {"priorityClassName": priority}}}}


def test_halt_records_counts_and_a_second_halt_keeps_them() -> None:
    first = [stop.halt_scale(item) for item in (deployment("agent-a", 2), deployment("agent-b", 0))]
    assert [(p["metadata"]["annotations"]["sapphire.io/halted-replicas"], p["spec"]["replicas"]) for p in first] == [
        ("2", 0), ("0", 0)]
    assert set(first[0]) == {"apiVersion", "kind", "metadata", "spec"}  # a server-side apply patch, nothing else
    halted = deployment("agent-a", 0, {"sapphire.io/halted-replicas": "2"})
    assert stop.halt_scale(halted)["metadata"]["annotations"]["sapphire.io/halted-replicas"] == "2"
    assert not stop.needs_scale(halted)
    # A deploy that scaled a halted agent back up needs the scale again, without losing the count.
    redeployed = deployment("agent-a", 2, {"sapphire.io/halted-replicas": "3"})
    assert stop.needs_scale(redeployed)
    assert stop.halt_scale(redeployed)["metadata"]["annotations"]["sapphire.io/halted-replicas"] == "3"


def test_the_quota_names_the_agents_classes_and_never_one_another_workload_uses() -> None:
    agents = [deployment("agent-a", 1, priority="sapphire-standard"), deployment("agent-b", 1, priority="")]
    others = [deployment("trading-coordinator", 2, component="coordinator", priority="sapphire-shared")]
    classes = stop.quota_classes(agents, others, ["sapphire-lightweight", "sapphire-shared", "sapphire-standard"],
                                 ["sapphire-trading-critical", ""])
    assert classes == ["sapphire-lightweight", "sapphire-standard"]
    assert stop.quota_classes([], [], [], ["x"]) == []  # nothing to name: no quota is written


def test_without_a_redis_endpoint_the_halt_flag_step_fails_naming_the_variable(module_runner: Any,
                                                                             tmp_path: Any) -> None:
    """No Redis given and no cluster reachable: every step is reported failed, none is skipped silently."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n"
                          "contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
                          "users:\n- name: u\n  user: {token: t}\n")
    result = module_runner("sapphire_emergency_stop", {
        "kubeconfig": str(kubeconfig), "context": "c", "namespace": "ns", "timeout": 2,
        "record": {"reason": "test", "actor": "unit", "ts": 1.0}})
    steps = {item["step"]: item for item in result["steps"]}
    assert steps["halt-flag"]["status"] == "failed" and "agents_halt_redis_endpoint" in steps["halt-flag"]["msg"]
    assert all(steps[name]["status"] == "failed" for name in ("halt-record", "scale", "egress")), steps
    assert "cannot reach the API server" in steps["scale"]["msg"]
    assert result["seconds"] == {"halt_flag": None, "scale_requested": None} and not result["changed"]


class _Module:
    check_mode = False

    def __init__(self) -> None:
        self.params = {"namespace": "ns", "set_flag": True, "redis_targets": [{"host": "127.0.0.1", "port": 1}],
                       "record": {"reason": "test"}, "timeout": 2}


def _timed_stop(flag_seconds: float, monkeypatch: Any) -> tuple[Any, list[tuple[str, float]]]:
    import threading
    import time

    events: list[tuple[str, float]] = []
    started = time.monotonic()
    release = threading.Event()

    def halt_flag(self: Any, pool: Any) -> None:
        release.wait(flag_seconds)
        events.append(("flag", time.monotonic() - started))

    def kubernetes(self: Any, pool: Any) -> dict[str, Any]:
        events.append(("kubernetes", time.monotonic() - started))
        return {}

    monkeypatch.setattr(stop.Stop, "halt_flag", halt_flag)
    monkeypatch.setattr(stop.Stop, "kubernetes", kubernetes)
    return stop.Stop(_Module()), events


def test_the_halt_flag_goes_out_before_the_kubernetes_steps_start(monkeypatch: Any) -> None:
    runner, events = _timed_stop(0.05, monkeypatch)
    runner.run()
    assert [name for name, _ in events] == ["flag", "kubernetes"]


def test_a_redis_that_does_not_answer_delays_the_scale_down_by_the_head_start_at_most(monkeypatch: Any) -> None:
    runner, events = _timed_stop(stop.FLAG_HEAD_START + 1.0, monkeypatch)
    runner.run()
    assert [name for name, _ in events] == ["kubernetes", "flag"]
    assert dict(events)["kubernetes"] < stop.FLAG_HEAD_START + 0.5
