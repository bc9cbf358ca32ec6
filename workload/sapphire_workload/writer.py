"""One round of synthetic trading: heartbeats, trades, decisions, signals, positions, portfolio, breakers."""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sapphire_workload.metrics import Registry
from sapphire_workload.misbehaviour import Misbehaviour

LOG = logging.getLogger("sapphire_workload")

DECISIONS = ("buy", "sell", "hold")
SIGNALS = ("long", "short", "flat")
BREAKERS = ("exchange", "market_data")
BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
# Session P&L is kept within this band (USD), so the workload alone can never breach
# the loss limits (1000 USD per hour, 5 % per day): any window's loss is below 2 * band + 1.
PNL_BAND = 50.0
MAX_TRADE_PNL = 1.0
INITIAL_PORTFOLIO_USD = 100000.0
# The epoch fence: at a promotion the DR code writes the platform state's new epoch into each
# promoted store; a store holding an older epoch is a fenced old primary and takes no writes.
EPOCH_KEY = "sapphire:epoch"
STALE_EPOCH_REFUSALS = "sapphire_workload_stale_epoch_refusals_total"
# The coordinator's requests per round and release (--coordinator-releases: the live color's and a new one's).
COORDINATOR_REQUESTS = 20
COORDINATOR_LATENCY = (0.005, 0.05)
# The positions each agent keeps (roles/agents: sapphire_positions_info reconciles them with the trades): one field per
# symbol with the net quantity, _as_of the time of the last trade counted, _since that of the first.
POSITIONS_KEY = "sapphire:positions:{agent}"


class StaleEpoch(Exception):
    """A store's epoch is older than this writer's (or unreadable): the round wrote nothing there."""


@dataclass
class Agent:
    name: str
    strategy: str
    tier: str
    replicas: int
    release: str = ""  # the release these instances run; empty: the workload's --release


DECISION_LATENCY = (0.002, 0.02)  # seconds, a healthy decision


@dataclass
class WriterState:
    session_pnl: float = 0.0
    rounds: int = 0
    last_round_ts: float = 0.0
    last_error: str | None = None
    fenced: bool = False  # the last round was refused by the epoch fence (last_error says why)
    recent_pnl: deque[tuple[float, float]] = field(default_factory=deque)  # (ts, pnl) of the last hour
    last_trade_ts: float = 0.0  # trade times only move forward (a positions hash's _as_of covers every earlier trade)


def load_agents(data: Any) -> list[Agent]:
    """Agents from the trading_agents shape; ValueError names the bad entry."""
    if not isinstance(data, list):
        raise ValueError("the agents file must hold a JSON list of {name, strategy, tier, replicas}")
    agents = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not item.get("name"):
            raise ValueError(f"agents[{index}] has no name")
        agents.append(Agent(name=str(item["name"]), strategy=str(item.get("strategy", item["name"])),
                            tier=str(item.get("tier", "standard")), replicas=int(item.get("replicas", 1)),
                            release=str(item.get("release") or "")))
    return agents


def next_pnl(rng: random.Random, session_pnl: float) -> float:
    """A small realized P&L around zero that keeps the session inside the band."""
    pnl = round(rng.uniform(-MAX_TRADE_PNL, MAX_TRADE_PNL), 4)
    if session_pnl + pnl < -PNL_BAND or session_pnl + pnl > PNL_BAND:
        pnl = -pnl
    return pnl


def stale_epoch_message(store: str, store_epoch: int, epoch: int) -> str | None:
    """Why a store at store_epoch must not take this writer's writes; None when it may (equal or newer)."""
    if store_epoch >= epoch:
        return None
    return (f"{store} epoch {store_epoch} is older than this writer's epoch {epoch}: refusing to write (fenced "
            f"store; the workload must point at the primaries promoted at epoch {epoch})")


def redis_epoch(redis_client: Any) -> int:
    """The epoch in Redis key sapphire:epoch (0 when missing); ValueError when it holds no whole number."""
    raw = redis_client.get(EPOCH_KEY)
    if raw is None:
        return 0
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"redis key {EPOCH_KEY} holds {text!r}, not a whole number: refusing to write "
                         f"(the DR promotion writes the platform state's epoch there)") from None


def postgres_epoch(cursor: Any, lock: bool = False) -> int:
    """The epoch in table sapphire_epoch (0 without the table or its row).

    to_regclass answers NULL for a missing table instead of raising, so no transaction is left aborted.
    lock=True reads the row FOR SHARE: a promotion updating it waits for this transaction, or this
    transaction reads the promotion's epoch once it has committed.
    """
    cursor.execute("SELECT to_regclass('sapphire_epoch') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute("SELECT epoch FROM sapphire_epoch FOR SHARE" if lock else "SELECT epoch FROM sapphire_epoch")
    row = cursor.fetchone()
    return 0 if row is None else int(row[0])


def refuse(state: WriterState, metrics: Registry, message: str) -> NoReturn:
    """Count and record a refused round and raise StaleEpoch; logged once per change, not every round."""
    metrics.inc(STALE_EPOCH_REFUSALS)
    if state.last_error != message:
        LOG.error("%s", message)
    state.last_error = message
    state.fenced = True
    raise StaleEpoch(message)


def check_epoch(redis_client: Any, pg_conn: Any, epoch: int, state: WriterState, metrics: Registry) -> None:
    """Raise StaleEpoch, before anything is written, when Redis or PostgreSQL holds an older epoch."""
    try:
        message = stale_epoch_message("redis", redis_epoch(redis_client), epoch)
    except ValueError as exc:
        message = str(exc)
    if message is None and pg_conn is not None:
        with pg_conn.cursor() as cursor:
            message = stale_epoch_message("postgresql", postgres_epoch(cursor), epoch)
    if message is not None:
        refuse(state, metrics, message)


def keep_positions(redis_client: Any, trades: list[tuple[Any, ...]], as_of: str) -> None:
    """Count committed trades (symbol, agent, side, quantity, ...) into the agents' positions, in one MULTI: the
    trades are in PostgreSQL first, so a reconciliation that reads Redis first never sees a position ahead of them."""
    pipe = redis_client.pipeline(transaction=True)
    for symbol, agent, side, quantity, *_ in trades:
        key = POSITIONS_KEY.format(agent=agent)
        pipe.hincrbyfloat(key, symbol, quantity if side == "buy" else -quantity)
        pipe.hset(key, "_as_of", as_of)
        pipe.hsetnx(key, "_since", as_of)
    pipe.execute()


def coordinator_round(releases: list[str], rng: random.Random, metrics: Registry,
                      misbehave: Misbehaviour | None = None) -> None:
    """One round of the coordinator's API requests for each release that runs a coordinator (blue-green: the live
    color's and the new one's), in sapphire_coordinator_requests_total{release, code} and
    sapphire_coordinator_request_duration_seconds{release}; `misbehave.release` fails its error_rate of them and
    answers latency_seconds slower."""
    for release in releases:
        bad = misbehave if misbehave and misbehave.release == release else None
        for _ in range(COORDINATOR_REQUESTS):
            failed = bool(bad) and rng.random() < bad.error_rate
            for code, happened in (("200", not failed), ("500", failed)):  # both series exist from the first round
                metrics.inc("sapphire_coordinator_requests_total", 1.0 if happened else 0.0,
                            labels={"release": release, "code": code})
            metrics.observe("sapphire_coordinator_request_duration_seconds",
                            rng.uniform(*COORDINATOR_LATENCY) + (bad.latency_seconds if bad else 0.0),
                            labels={"release": release})


def write_round(redis_client: Any, pg_conn: Any, agents: list[Agent], symbols: list[str], release: str,
                rng: random.Random, state: WriterState, metrics: Registry, now: float | None = None,
                epoch: int = 0, misbehave: Misbehaviour | None = None) -> None:
    """Write one round; raises on a connection error (the caller reconnects).

    Raises StaleEpoch, writing nothing, when a store's epoch is older than `epoch` (the epoch fence).
    Every agent's instances report as their release (metrics labelled agent, tier, release); the instances of
    `misbehave.release` fail decisions, go silent, lose money or decide slowly as it says.
    """
    now = time.time() if now is None else now
    was_fenced = state.fenced
    state.fenced = False
    check_epoch(redis_client, pg_conn, epoch, state, metrics)
    active = [agent for agent in agents if agent.replicas > 0]

    def bad(agent: Agent) -> Misbehaviour | None:
        return misbehave if misbehave and (agent.release or release) == misbehave.release else None

    def labels(agent: Agent) -> dict[str, str]:
        return {"agent": agent.name, "tier": agent.tier, "release": agent.release or release}

    pipe = redis_client.pipeline(transaction=False)
    for agent in active:
        if not (bad(agent) and bad(agent).stale_heartbeats):
            pipe.hset(f"sapphire:agent:{agent.name}:heartbeat", mapping={
                "ts": f"{now:.3f}", "status": "running", "tier": agent.tier, "version": agent.release or release})
    for name in BREAKERS:
        pipe.hsetnx(f"sapphire:circuit:{name}", "state", "closed")
        pipe.hsetnx(f"sapphire:circuit:{name}", "since", f"{now:.3f}")
    pipe.hgetall("sapphire:portfolio")
    replies = pipe.execute()
    portfolio = replies[-1] or {}

    trades, decisions, signals = [], [], []
    round_pnl = 0.0
    for index, symbol in enumerate(symbols if active else []):
        agent = active[(state.rounds + index) % len(active)]
        pnl = -round(bad(agent).loss_per_trade, 4) if bad(agent) and bad(agent).loss_per_trade \
            else next_pnl(rng, state.session_pnl + round_pnl)
        round_pnl += pnl
        metrics.inc("sapphire_agent_realized_pnl_usd", pnl, labels=labels(agent))
        metrics.inc("sapphire_agent_realized_loss_usd_total", max(0.0, -pnl), labels=labels(agent))
        price = round(rng.uniform(10, 60000), 4)
        trades.append((symbol, agent.name, rng.choice(("buy", "sell")), round(rng.uniform(0.001, 1), 6), price, pnl,
                       f"syn-{int(now * 1000)}-{index}"))
        signal = rng.choice(SIGNALS)
        signals.append((symbol, agent.name, signal, round(rng.uniform(0, 1), 3)))
        metrics.inc("trading_signals_total", labels={"symbol": symbol, "signal": signal})
        metrics.inc("sapphire_signals_total", labels={"agent": agent.name, "symbol": symbol, "signal": signal})
        metrics.inc("trades_total", labels={"symbol": symbol})
    for agent in active:
        decisions.append((agent.name, rng.choice(symbols), rng.choice(DECISIONS), round(rng.uniform(0.5, 1), 3),
                          f"synthetic {agent.strategy} decision"))
        metrics.inc("sapphire_agent_decisions_total", labels=labels(agent))
        metrics.inc("sapphire_agent_errors_total",
                    1.0 if bad(agent) and rng.random() < bad(agent).error_rate else 0.0, labels=labels(agent))
        metrics.observe("sapphire_decision_latency_seconds",
                        rng.uniform(*DECISION_LATENCY) + (bad(agent).latency_seconds if bad(agent) else 0.0),
                        labels=labels(agent))
    # The round's trades carry one time, never earlier than the last round's.
    state.last_trade_ts = max(now, state.last_trade_ts + 0.000001)
    traded_at = datetime.datetime.fromtimestamp(state.last_trade_ts, datetime.timezone.utc)  # noqa: UP017
    if pg_conn is not None and (trades or decisions):
        with pg_conn.transaction(), pg_conn.cursor() as cursor:
            # Again under the row lock: a promotion that bumped the epoch since the check wins.
            message = stale_epoch_message("postgresql", postgres_epoch(cursor, lock=True), epoch)
            if message is not None:
                refuse(state, metrics, message)  # the exception rolls the transaction back
            if trades:
                cursor.executemany("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, pnl, "
                                   "order_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                                   [(traded_at, *trade) for trade in trades])
            if signals:
                cursor.executemany("INSERT INTO signals (timestamp, symbol, agent_id, signal, strength) "
                                   "VALUES (now(), %s, %s, %s, %s)", signals)
            if decisions:
                cursor.executemany("INSERT INTO agent_decisions (timestamp, agent_id, symbol, decision, confidence, "
                                   "rationale) VALUES (now(), %s, %s, %s, %s, %s)", decisions)
    state.session_pnl += round_pnl
    if pg_conn is not None and trades:
        keep_positions(redis_client, trades, traded_at.isoformat())

    # The value moves by increments (HINCRBYFLOAT), so a drill or an operator setting the portfolio
    # is never overwritten by a stale read; day_open_value is reset once per UTC day.
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    try:
        value = float(portfolio.get("value", ""))
    except ValueError:
        value = INITIAL_PORTFOLIO_USD
        redis_client.hset("sapphire:portfolio", "value", f"{value:.4f}")
    if portfolio.get("day") != today or "day_open_value" not in portfolio:
        redis_client.hset("sapphire:portfolio", mapping={"day_open_value": f"{value:.4f}", "day": today})
    value = float(redis_client.hincrbyfloat("sapphire:portfolio", "value", round(round_pnl, 4)))
    redis_client.hset("sapphire:portfolio", "ts", f"{now:.3f}")
    day_open = float(redis_client.hget("sapphire:portfolio", "day_open_value") or value)
    state.recent_pnl.append((now, round_pnl))
    while state.recent_pnl and state.recent_pnl[0][0] < now - 3600:
        state.recent_pnl.popleft()
    metrics.set("portfolio_value", value)
    metrics.set("sapphire_portfolio_value_usd", value)
    metrics.set("sapphire_portfolio_day_open_value_usd", day_open)
    metrics.set("sapphire_realized_pnl_1h_usd", round(sum(pnl for _, pnl in state.recent_pnl), 4))
    for agent in agents:
        metrics.set("agent_activity_score", 1.0 if agent.replicas > 0 else 0.0,
                    labels={"agent": agent.name, "tier": agent.tier})
        if agent.replicas > 0 and not (bad(agent) and bad(agent).stale_heartbeats):
            metrics.set("sapphire_agent_last_heartbeat_timestamp_seconds", now, labels=labels(agent))
    breakers = redis_client.pipeline(transaction=False)
    for name in BREAKERS:
        breakers.hget(f"sapphire:circuit:{name}", "state")
    for name, breaker_state in zip(BREAKERS, breakers.execute(), strict=True):
        code = BREAKER_VALUE.get(breaker_state or "closed", 2)
        metrics.set("circuit_breaker_state", code, labels={"name": name})
        metrics.set("sapphire_circuit_breaker_state", code, labels={"name": name})
    if was_fenced:
        LOG.info("epoch fence lifted: the stores are at epoch %d or newer, writing again", epoch)
    state.rounds += 1
    state.last_round_ts = now
    state.last_error = None
