"""A tiny thread-safe Prometheus registry (counters, gauges, one histogram), text format only."""

from __future__ import annotations

import threading
from collections import defaultdict

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _render_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = list(labels) + list(extra)
    if not items:
        return ""
    body = ",".join(f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for key, value in items)
    return "{" + body + "}"


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self._values[name][_labels(labels)] = float(value)

    def inc(self, name: str, amount: float = 1.0, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            key = _labels(labels)
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            key = _labels(labels)
            # buckets..., +Inf count, sum
            series = self._hist[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            for index, bound in enumerate(LATENCY_BUCKETS):
                if value <= bound:
                    series[index] += 1
            series[len(LATENCY_BUCKETS)] += 1
            series[len(LATENCY_BUCKETS) + 1] += value

    def get(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        with self._lock:
            return self._values.get(name, {}).get(_labels(labels))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(self._values) | set(self._hist)):
                kind, text = self._help.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_render_labels(labels)} {value:.17g}")
                for labels, series in sorted(self._hist.get(name, {}).items()):
                    for index, bound in enumerate(LATENCY_BUCKETS):
                        bucket = _render_labels(labels, (("le", f"{bound:g}"),))
                        lines.append(f"{name}_bucket{bucket} {series[index]:g}")
                    count = series[len(LATENCY_BUCKETS)]
                    lines.append(f"{name}_bucket{_render_labels(labels, (('le', '+Inf'),))} {count:g}")
                    lines.append(f"{name}_count{_render_labels(labels)} {count:g}")
                    lines.append(f"{name}_sum{_render_labels(labels)} {series[-1]:.17g}")
        return "\n".join(lines) + "\n"
