"""The synthetic workload: agent loading, bounded P&L, metrics exposition, and the epoch fence
(a store holding an older epoch than the workload's takes no writes)."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.sapphire_connections import parse_prometheus_text
from sapphire_workload.cli import Workload, parse_args
from sapphire_workload.metrics import Registry
from sapphire_workload.misbehaviour import Misbehaviour, parse_misbehaviour
from sapphire_workload.writer import (
    MAX_TRADE_PNL,
    PNL_BAND,
    STALE_EPOCH_REFUSALS,
    Agent,
    StaleEpoch,
    WriterState,
    coordinator_round,
    load_agents,
    next_pnl,
    write_round,
)


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


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def execute(self) -> list[Any]:
        return [getattr(self.redis, name)(*args, **kwargs) for name, args, kwargs in self.calls]


class FakeRedis:
    """The commands write_round sends; every write is recorded in `writes`."""

    def __init__(self, epoch: str | None = None) -> None:
        self.strings: dict[str, str] = {} if epoch is None else {"sapphire:epoch": epoch}
        self.hashes: dict[str, dict[str, str]] = {}
        self.writes: list[str] = []

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def get(self, key: str) -> str | None:
        return self.strings.get(key)

    def hget(self, key: str, field: str) -> str | None:
        return self.hashes.get(key, {}).get(field)

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    def hset(self, key: str, field: str | None = None, value: str | None = None,
             mapping: dict[str, str] | None = None) -> None:
        self.writes.append(key)
        self.hashes.setdefault(key, {}).update(mapping or {field: value})

    def hsetnx(self, key: str, field: str, value: str) -> None:
        self.writes.append(key)
        self.hashes.setdefault(key, {}).setdefault(field, value)

    def hincrbyfloat(self, key: str, field: str, amount: float) -> float:
        self.writes.append(key)
        value = float(self.hashes.setdefault(key, {}).get(field, 0)) + amount
        self.hashes[key][field] = str(value)
        return value

    def scan_iter(self, match: str, count: int) -> Iterator[str]:
        return iter([key for key in self.hashes if key.startswith(match.rstrip("*"))])

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FakePostgres:
    """A connection with table sapphire_epoch (or none) holding `epoch` (or no row).

    locked_epoch is what SELECT ... FOR SHARE reads, i.e. the epoch after a concurrent change.
    Inserts are kept in `committed` only when their transaction commits.
    """

    def __init__(self, epoch: int | None = None, table: bool = True, locked_epoch: int | None = None) -> None:
        self.epoch, self.table = epoch, table
        self.locked_epoch = epoch if locked_epoch is None else locked_epoch
        self.statements: list[str] = []
        self.inserts: list[str] = []
        self.committed: list[str] = []
        self.rolled_back = False
        self._row: tuple[Any, ...] | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.inserts = []
        try:
            yield
        except BaseException:
            self.rolled_back = True
            raise
        self.committed += self.inserts

    @contextlib.contextmanager
    def cursor(self) -> Iterator[FakePostgres]:
        yield self

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append(sql)
        if sql == "SELECT to_regclass('sapphire_epoch') IS NOT NULL":
            self._row = (self.table,)
        elif sql.startswith("SELECT epoch FROM sapphire_epoch"):
            if not self.table:
                raise RuntimeError('relation "sapphire_epoch" does not exist')  # psycopg's UndefinedTable
            epoch = self.locked_epoch if sql.endswith("FOR SHARE") else self.epoch
            self._row = None if epoch is None else (epoch,)
        else:
            raise AssertionError(f"unexpected statement {sql!r}")

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._row

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.inserts.append(sql.split()[2])
        if sql.split()[2] == "trades":
            self.trades = list(rows)  # (timestamp, symbol, agent_id, side, quantity, price, pnl, order_id)


AGENTS = [Agent(name="momentum", strategy="momentum", tier="standard", replicas=1)]


def run_round(redis: FakeRedis, pg: FakePostgres | None, epoch: int,
              state: WriterState | None = None, metrics: Registry | None = None) -> None:
    write_round(redis, pg, AGENTS, ["BTC/USDT"], "r1", random.SystemRandom(), state or WriterState(),
                metrics or Registry(), now=1_700_000_000.0, epoch=epoch)


def test_a_stale_redis_epoch_refuses_the_round_before_anything_is_written() -> None:
    redis, pg, state, metrics = FakeRedis(epoch="2"), FakePostgres(epoch=3), WriterState(), Registry()
    with pytest.raises(StaleEpoch, match=r"redis epoch 2 is older than this writer's epoch 3: refusing to write"):
        run_round(redis, pg, 3, state, metrics)
    assert redis.writes == [] and redis.hashes == {}
    assert pg.inserts == [] and pg.committed == []
    assert state.fenced and state.last_error is not None and "redis epoch 2" in state.last_error
    assert metrics.get(STALE_EPOCH_REFUSALS) == 1


def test_a_stale_postgres_epoch_refuses_the_round_before_anything_is_written() -> None:
    redis, pg = FakeRedis(epoch="3"), FakePostgres(epoch=2)
    with pytest.raises(StaleEpoch, match=r"postgresql epoch 2 is older than this writer's epoch 3"):
        run_round(redis, pg, 3)
    assert redis.writes == [] and redis.hashes == {}
    assert pg.inserts == [] and pg.committed == []


def test_a_stale_epoch_seen_under_the_row_lock_rolls_the_postgres_write_back() -> None:
    # the check before the round saw epoch 3; inside the write transaction the row says 2
    pg = FakePostgres(epoch=3, locked_epoch=2)
    with pytest.raises(StaleEpoch, match="postgresql epoch 2"):
        run_round(FakeRedis(epoch="3"), pg, 3)
    assert "SELECT epoch FROM sapphire_epoch FOR SHARE" in pg.statements
    assert pg.rolled_back and pg.committed == []


@pytest.mark.parametrize(("redis_epoch", "pg_epoch", "epoch"), [
    ("3", 3, 3),  # equal
    ("4", 5, 3),  # newer stores are fine: the fence only refuses older ones
    (None, None, 0),  # no key and no row: epoch 0
])
def test_stores_at_the_writers_epoch_or_newer_take_the_round(redis_epoch: str | None, pg_epoch: int | None,
                                                             epoch: int) -> None:
    redis, pg, state = FakeRedis(epoch=redis_epoch), FakePostgres(epoch=pg_epoch), WriterState()
    run_round(redis, pg, epoch, state)
    assert "sapphire:agent:momentum:heartbeat" in redis.hashes
    assert pg.committed == ["trades", "signals", "agent_decisions"]
    assert state.rounds == 1 and not state.fenced and state.last_error is None


def test_a_missing_epoch_table_is_epoch_zero_and_is_never_selected_from() -> None:
    pg = FakePostgres(table=False)
    run_round(FakeRedis(epoch="0"), pg, 0)
    assert pg.committed == ["trades", "signals", "agent_decisions"]
    with pytest.raises(StaleEpoch, match="postgresql epoch 0 is older than this writer's epoch 1"):
        run_round(FakeRedis(epoch="1"), FakePostgres(table=False), 1)


def test_a_missing_redis_key_is_epoch_zero() -> None:
    redis = FakeRedis()
    with pytest.raises(StaleEpoch, match="redis epoch 0 is older than this writer's epoch 1"):
        run_round(redis, None, 1)
    assert redis.writes == []
    run_round(redis, None, 0)
    assert "sapphire:agent:momentum:heartbeat" in redis.hashes


def test_an_unreadable_redis_epoch_refuses_the_round() -> None:
    redis = FakeRedis(epoch="three")
    with pytest.raises(StaleEpoch, match="holds 'three', not a whole number"):
        run_round(redis, None, 0)
    assert redis.writes == []


def test_a_refusal_is_logged_once_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    redis, state, metrics = FakeRedis(epoch="2"), WriterState(), Registry()
    with caplog.at_level(logging.INFO, logger="sapphire_workload"):
        for _ in range(3):
            with pytest.raises(StaleEpoch):
                run_round(redis, None, 3, state, metrics)
        redis.strings["sapphire:epoch"] = "3"
        run_round(redis, None, 3, state, metrics)
    assert [record.levelname for record in caplog.records] == ["ERROR", "INFO"]
    assert "redis epoch 2" in caplog.records[0].getMessage()
    assert "fence lifted" in caplog.records[1].getMessage()
    assert metrics.get(STALE_EPOCH_REFUSALS) == 3


def test_cli_takes_the_epoch_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAPPHIRE_EPOCH", raising=False)
    assert parse_args(["--agents", "a.json"]).epoch == 0
    assert parse_args(["--agents", "a.json", "--epoch", "4"]).epoch == 4
    monkeypatch.setenv("SAPPHIRE_EPOCH", "7")
    assert parse_args(["--agents", "a.json"]).epoch == 7
    assert parse_args(["--agents", "a.json", "--epoch=2"]).epoch == 2


@pytest.mark.parametrize(("argv", "env"), [(["--epoch", "-1"], None), (["--epoch=-1"], None),
                                           (["--epoch", "x"], None), ([], "-1")])
def test_cli_rejects_an_epoch_below_zero(argv: list[str], env: str | None, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    if env is None:
        monkeypatch.delenv("SAPPHIRE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SAPPHIRE_EPOCH", env)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--agents", "a.json", *argv])
    assert exc.value.code == 2
    assert "whole number >= 0" in capsys.readouterr().err


def fenced_workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workload, FakeRedis]:
    """A workload at epoch 3 whose Redis is at epoch 2: the fence refuses its rounds."""
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"name": "momentum", "replicas": 1}]), encoding="utf-8")
    monkeypatch.delenv("SAPPHIRE_POSTGRES_DSN", raising=False)
    workload = Workload(parse_args(["--agents", str(agents), "--epoch", "3"]))
    redis = FakeRedis(epoch="2")
    redis.close = workload.stop.set  # one round per loop() call
    monkeypatch.setattr(workload, "redis", lambda: redis)
    return workload, redis


def test_health_fails_while_the_epoch_fence_refuses_the_rounds(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    workload, redis = fenced_workload(tmp_path, monkeypatch)
    workload.loop()  # the writer thread's loop survives the refusal
    code, body = workload.health()
    assert (code, body["status"]) == (500, "fail")
    assert body["components"]["epoch"]["status"] == "fail"
    assert "redis epoch 2 is older than this writer's epoch 3" in body["components"]["epoch"]["error"]
    assert "redis epoch 2" in body["components"]["writer"]["error"]
    assert redis.writes == []
    assert f"{STALE_EPOCH_REFUSALS} 1" in workload.metrics.render()

    redis.strings["sapphire:epoch"] = "3"  # the store is promoted: the next round writes and health clears
    workload.stop.clear()
    workload.loop()
    code, body = workload.health()
    assert (code, body["status"], body["components"]["epoch"]["status"]) == (200, "ok", "ok")


def test_liveness_answers_while_readiness_fails_on_a_dependency(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A database outage fails /health (readiness: no traffic) but not /livez (liveness: no restart storm).
    from http.server import ThreadingHTTPServer
    from urllib.error import HTTPError
    from urllib.request import urlopen

    from sapphire_workload.cli import make_handler

    workload, _ = fenced_workload(tmp_path, monkeypatch)
    workload.loop()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(workload))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(HTTPError) as failed:
            urlopen(base + "/health", timeout=5)  # noqa: S310 - a loopback test server
        assert failed.value.code == 500
        with urlopen(base + "/livez", timeout=5) as alive:  # noqa: S310
            assert (alive.status, json.loads(alive.read())) == (200, {"status": "alive"})
    finally:
        server.shutdown()
        server.server_close()


def test_the_agents_positions_follow_their_committed_trades_and_as_of_moves_forward() -> None:
    redis, pg, state = FakeRedis(epoch="1"), FakePostgres(epoch=1), WriterState()
    agents = [Agent(name="momentum", strategy="momentum", tier="standard", replicas=1),
              Agent(name="pairs", strategy="pairs", tier="standard", replicas=1)]
    net: dict[tuple[str, str], float] = {}
    stamps = []
    for now in (1_700_000_000.0, 1_700_000_000.0, 1_699_999_990.0):  # the clock stands still, then steps back
        write_round(redis, pg, agents, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "r1", random.SystemRandom(), state,
                    Registry(), now=now, epoch=1)
        for _stamp, symbol, agent, side, quantity, *_ in pg.trades:
            net[agent, symbol] = net.get((agent, symbol), 0.0) + (quantity if side == "buy" else -quantity)
        stamps.append(pg.trades[0][0])
        assert redis.hashes[f"sapphire:positions:{pg.trades[0][2]}"]["_as_of"] == stamps[-1].isoformat()
    assert stamps == sorted(set(stamps)), "trade times must move forward, or _as_of would miss earlier trades"
    kept = {(key.split(":")[2], symbol): float(value) for key, fields in redis.hashes.items()
            if key.startswith("sapphire:positions:") for symbol, value in fields.items() if not symbol.startswith("_")}
    assert kept.keys() == net.keys()
    assert all(abs(kept[item] - net[item]) < 1e-9 for item in net)
    assert {fields["_since"] for key, fields in redis.hashes.items() if key.startswith("sapphire:positions:")} == {
        stamps[0].isoformat()}


def test_a_refused_round_or_one_without_postgres_keeps_no_positions() -> None:
    redis = FakeRedis(epoch="3")
    with pytest.raises(StaleEpoch):  # the row lock sees an older epoch: the trades roll back
        run_round(redis, FakePostgres(epoch=3, locked_epoch=2), epoch=3)
    run_round(redis, None, epoch=3)
    assert not any(key.startswith("sapphire:positions:") for key in redis.hashes)


def per_release_round(misbehave: Misbehaviour | None, rounds: int = 40) -> tuple[FakeRedis, FakePostgres, Registry]:
    """Rounds of a canary: momentum's stable instances at r1 (the workload's release), its canary at r2."""
    redis, pg, state, metrics = FakeRedis(epoch="1"), FakePostgres(epoch=1), WriterState(), Registry()
    agents = [Agent(name="momentum", strategy="momentum", tier="standard", replicas=2),
              Agent(name="momentum", strategy="momentum", tier="standard", replicas=1, release="r2")]
    for index in range(rounds):
        write_round(redis, pg, agents, ["BTC/USDT", "ETH/USDT"], "r1", random.SystemRandom(), state, metrics,
                    now=1_700_000_000.0 + index, epoch=1, misbehave=misbehave)
    return redis, pg, metrics


def series(metrics: Registry, name: str) -> dict[str, float]:
    """release -> value of a metric's series."""
    return {labels["release"]: value for labels, value in parse_prometheus_text(metrics.render()).get(name, [])}


def test_each_instance_reports_as_its_release_and_a_healthy_release_never_errs() -> None:
    redis, _, metrics = per_release_round(None)
    assert series(metrics, "sapphire_agent_decisions_total") == {"r1": 40, "r2": 40}
    assert series(metrics, "sapphire_agent_errors_total") == {"r1": 0, "r2": 0}
    assert set(series(metrics, "sapphire_agent_last_heartbeat_timestamp_seconds")) == {"r1", "r2"}
    # One heartbeat per agent, as its pods (stable and canary alike) keep it: the last instance to beat wrote it.
    assert [key for key in redis.hashes if key.endswith(":heartbeat")] == ["sapphire:agent:momentum:heartbeat"]
    assert redis.hashes["sapphire:agent:momentum:heartbeat"]["version"] == "r2"
    assert series(metrics, "sapphire_decision_latency_seconds_count") == {"r1": 40, "r2": 40}
    pnl = series(metrics, "sapphire_agent_realized_pnl_usd")
    assert set(pnl) == {"r1", "r2"} and all(abs(value) <= 40 * 2 * MAX_TRADE_PNL for value in pnl.values())


def test_the_misbehaving_release_errs_goes_silent_loses_and_slows_and_only_it() -> None:
    bad = Misbehaviour(release="r2", error_rate=1.0, stale_heartbeats=True, loss_per_trade=25.0, latency_seconds=3.0)
    redis, pg, metrics = per_release_round(bad)
    assert series(metrics, "sapphire_agent_errors_total") == {"r1": 0, "r2": 40}
    assert set(series(metrics, "sapphire_agent_last_heartbeat_timestamp_seconds")) == {"r1"}
    assert redis.hashes["sapphire:agent:momentum:heartbeat"]["version"] == "r1", "only the stable instances beat"
    pnl = series(metrics, "sapphire_agent_realized_pnl_usd")
    assert pnl["r2"] <= -25.0 * 20 and pnl["r1"] > -40 * 2 * MAX_TRADE_PNL, pnl
    losses = series(metrics, "sapphire_agent_realized_loss_usd_total")
    assert losses["r2"] == -pnl["r2"] and 0 <= losses["r1"] <= 40 * 2 * MAX_TRADE_PNL, losses
    # The last round's trades: the canary's lose exactly loss_per_trade, the stable ones' at most 1 USD.
    assert {trade[6] for trade in pg.trades} - {-25.0} and all(abs(trade[6]) <= MAX_TRADE_PNL or trade[6] == -25.0
                                                               for trade in pg.trades)
    buckets = parse_prometheus_text(metrics.render())["sapphire_decision_latency_seconds_bucket"]
    fast = {labels["release"]: value for labels, value in buckets if labels["le"] == "2.5"}
    assert fast == {"r1": 40, "r2": 0}, "every r2 decision took over 3 s, none of r1's"


def test_each_coordinator_color_serves_as_its_release_and_only_the_misbehaving_one_fails() -> None:
    """A blue-green switch: the live color's coordinator at r1, the new one at r2 (--coordinator-releases r1,r2)."""
    assert parse_args(["--agents=/dev/null", "--release=r1"]).coordinator_releases == ["r1"]
    releases = parse_args(["--agents=/dev/null", "--release=r1", "--coordinator-releases=r1, r2"]).coordinator_releases
    assert releases == ["r1", "r2"]
    metrics = Registry()
    for _ in range(10):
        coordinator_round(releases, random.SystemRandom(), metrics,
                          Misbehaviour(release="r2", error_rate=1.0, latency_seconds=3.0))
    parsed = parse_prometheus_text(metrics.render())
    requests = {(labels["release"], labels["code"]): value
                for labels, value in parsed["sapphire_coordinator_requests_total"]}
    assert requests == {("r1", "200"): 200, ("r1", "500"): 0, ("r2", "200"): 0, ("r2", "500"): 200}
    fast = {labels["release"]: value for labels, value in parsed["sapphire_coordinator_request_duration_seconds_bucket"]
            if labels["le"] == "2.5"}
    assert fast == {"r1": 200, "r2": 0}, "every r2 request took over 3 s, none of r1's"


@pytest.mark.parametrize(("value", "said"), [
    ({"error_rate": 0.5}, "release must name the release"),
    ({"release": "r2", "error_rate": 1.5}, "error_rate must be a number from 0 to 1"),
    ({"release": "r2", "loss_per_trade": -1}, "loss_per_trade must be a number >= 0"),
    ({"release": "r2", "stale_heartbeats": "yes"}, "stale_heartbeats must be true or false"),
    ({"release": "r2", "errors": 1}, "unknown field(s) errors"),
    (["r2"], "must be a JSON object"),
])
def test_a_bad_misbehaviour_is_refused_naming_the_field(value: Any, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        parse_misbehaviour(value)
    with pytest.raises(SystemExit):
        parse_args(["--agents=/dev/null", f"--misbehave={json.dumps(value)}"])
