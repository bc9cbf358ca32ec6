"""Synthetic Sapphire trading workload: heartbeats, trades, decisions, signals, /health, /metrics.

Stands in for the coordinator and the agent ensemble in drills, tests and the local default,
writing exactly what the health contract (docs/architecture.md) says the platform writes.
"""

__version__ = "1.0.0"
