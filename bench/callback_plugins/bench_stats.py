# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Aggregate callback for the benchmarks: per-task wall time and per-host outcomes, as JSON.

Enabled by bench/run.py with ANSIBLE_CALLBACKS_ENABLED=bench_stats; writes to $BENCH_STATS_FILE.
It keeps no task results in memory (only counts), so it adds nothing measurable to a run.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_stats
type: aggregate
short_description: Record per-task wall time, host outcomes and applied object counts as JSON
description:
  - Writes one JSON document to the file named by the environment variable BENCH_STATS_FILE at the end of
    the run - the tasks in the order they started (play, name, role, action, seconds, ok/changed/failed/skipped
    host counts), the number of Kubernetes objects kubernetes.core.k8s reported, and the play recap.
requirements:
  - the BENCH_STATS_FILE environment variable
"""

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

K8S_ACTIONS = {"kubernetes.core.k8s", "k8s"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_stats"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._started = time.monotonic()
        self._tasks: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._play = ""

    def _close_current(self) -> None:
        if self._current is not None:
            self._current["seconds"] = round(time.monotonic() - self._current.pop("_t0"), 3)
            self._current = None

    def _start(self, task: Any, kind: str) -> None:
        self._close_current()
        role = getattr(task, "_role", None)
        self._current = {
            "play": self._play, "name": task.get_name(), "role": role.get_name() if role else "", "action": task.action,
            "kind": kind, "ok": 0, "changed": 0, "failed": 0, "skipped": 0, "k8s_objects": 0, "_t0": time.monotonic(),
        }
        # CLOCK_MONOTONIC is the machine's: the bench relates a task's start to what it observed from outside.
        self._current["started_monotonic"] = self._current["_t0"]
        self._tasks.append(self._current)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._close_current()
        self._play = play.get_name()

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._start(task, "task")

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._start(task, "handler")

    def _record(self, result: Any, status: str) -> None:
        if self._current is None:
            return
        self._current[status] += 1
        data = result._result
        if status != "skipped" and data.get("changed"):
            self._current["changed"] += 1
        if self._current["action"] in K8S_ACTIONS and isinstance(data.get("result"), dict):
            applied = data["result"].get("results")
            self._current["k8s_objects"] += len(applied) if isinstance(applied, list) else 1

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "failed")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close_current()
        path = os.environ.get("BENCH_STATS_FILE")
        if not path:
            return
        hosts = sorted(stats.processed.keys())
        document = {
            "seconds": round(time.monotonic() - self._started, 3),
            "tasks": self._tasks,
            "stats": {host: stats.summarize(host) for host in hosts},
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
