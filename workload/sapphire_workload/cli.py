"""Command line, writer loop and the coordinator's HTTP endpoints (/health, /metrics, /admin/fault)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis

from sapphire_workload import __version__
from sapphire_workload.metrics import Registry
from sapphire_workload.misbehaviour import parse_misbehaviour
from sapphire_workload.writer import (
    STALE_EPOCH_REFUSALS,
    StaleEpoch,
    WriterState,
    coordinator_round,
    load_agents,
    write_round,
)

LOG = logging.getLogger("sapphire_workload")
DEFAULT_SYMBOLS = "BTC/USDT,ETH/USDT,SOL/USDT"

EPILOG = """environment:
  SAPPHIRE_REDIS_USERNAME   Redis ACL user (unset: the default user)
  SAPPHIRE_REDIS_PASSWORD   Redis password (never pass secrets on the command line)
  SAPPHIRE_REDIS_CA_FILE    CA certificate a rediss:// server is verified against (unset: the trust store)
  SAPPHIRE_POSTGRES_DSN     libpq DSN or URL of the trading database, password included
                            (e.g. "host=127.0.0.1 port=15432 dbname=sapphire user=sapphire password=...")
  SAPPHIRE_EPOCH            default of --epoch

epoch fence:
  Before each round the workload reads the epoch of Redis (key sapphire:epoch) and PostgreSQL
  (table sapphire_epoch; a missing key, table or row is epoch 0) and writes nothing when either
  is older than --epoch: a fenced old primary takes no trading writes. /health then fails.

endpoints:
  GET  /health        {"status": "ok|degraded|fail", "components": {...}}; 200, or 500 when failing
                      (component "epoch" fails while the epoch fence refuses the rounds): readiness
  GET  /livez         {"status": "alive"}, 200 while the process serves requests, whatever its
                      dependencies do: liveness (a database outage must not restart the coordinator)
  GET  /metrics       Prometheus text format
  POST /admin/fault   loopback clients only; body {"health_status": 500} forces /health to fail,
                      {} clears it (the --fault-file, when given, is read on every request too)
"""


def epoch_arg(value: str) -> int:
    """--epoch / $SAPPHIRE_EPOCH: the platform state's epoch, a whole number >= 0."""
    try:
        epoch = int(value)
    except ValueError:
        epoch = -1
    if epoch < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (the platform state's epoch; from --epoch "
                                         f"or $SAPPHIRE_EPOCH), got {value!r}")
    return epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sapphire_workload", description="Synthetic Sapphire trading workload: writes agent heartbeats, "
        "trades, decisions and signals per the health contract and serves the coordinator's /health and /metrics.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("SAPPHIRE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        help="Redis URL without password (default: $SAPPHIRE_REDIS_URL or %(default)s)")
    parser.add_argument("--agents", required=True, type=Path,
                        help="JSON file with the agent list (shape of trading_agents: name, strategy, tier, replicas)")
    parser.add_argument("--release", default=os.environ.get("SAPPHIRE_RELEASE", "dev"),
                        help="release/version written into heartbeats (default: %(default)s)")
    parser.add_argument("--epoch", type=epoch_arg, default=os.environ.get("SAPPHIRE_EPOCH", "0"),
                        help="the platform state's epoch: refuse to write to a store holding an older one "
                        "(default: $SAPPHIRE_EPOCH or 0)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port for /health and /metrics (%(default)s)")
    parser.add_argument("--bind", default="127.0.0.1", help="HTTP bind address (%(default)s)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between rounds (%(default)s)")
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma-separated symbols (%(default)s)")
    parser.add_argument("--fault-file", type=Path, help="JSON file read on every /health request, e.g. "
                        '{"health_status": 500}')
    parser.add_argument("--misbehave", default=os.environ.get("SAPPHIRE_MISBEHAVE", ""),
                        help='JSON: what the instances of one release do wrong, e.g. {"release": "2026.12.2", '
                        '"error_rate": 0.5, "stale_heartbeats": true, "loss_per_trade": 50, "latency_seconds": 0.5} '
                        "(default: $SAPPHIRE_MISBEHAVE or nobody misbehaves)")
    parser.add_argument("--coordinator-releases", default="",
                        help="comma-separated releases whose coordinator serves requests (a blue-green switch: the "
                        "live color's and the new one's; default: --release)")
    parser.add_argument("--once", action="store_true", help="write one round and exit (no HTTP server)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if args.interval <= 0:
        parser.error(f"--interval must be greater than zero, got {args.interval}")
    if urlsplit(args.redis_url).password:
        parser.error("--redis-url must not contain a password; set SAPPHIRE_REDIS_PASSWORD instead")
    try:
        args.misbehave = parse_misbehaviour(json.loads(args.misbehave) if args.misbehave.strip() else None)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        parser.error(f"--misbehave: {exc}")
    args.coordinator_releases = [item.strip() for item in args.coordinator_releases.split(",") if item.strip()] \
        or [args.release]
    return args


class Workload:
    """Shared state of the writer thread and the HTTP handlers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.agents = load_agents(json.loads(args.agents.read_text(encoding="utf-8")))
        self.symbols = [item.strip() for item in args.symbols.split(",") if item.strip()]
        self.dsn = os.environ.get("SAPPHIRE_POSTGRES_DSN", "")
        self.redis_username = os.environ.get("SAPPHIRE_REDIS_USERNAME") or None
        self.redis_password = os.environ.get("SAPPHIRE_REDIS_PASSWORD") or None
        self.redis_ca_file = os.environ.get("SAPPHIRE_REDIS_CA_FILE") or None
        self.rng = random.SystemRandom()
        self.state = WriterState()
        self.metrics = Registry()
        self.fault: dict[str, Any] = {}
        self.stop = threading.Event()
        self._pg: Any = None
        self.metrics.describe("portfolio_value", "gauge", "Portfolio value in USD")
        self.metrics.describe("trading_signals_total", "counter", "Signals generated")
        self.metrics.describe("trades_total", "counter", "Trades executed")
        self.metrics.describe("agent_activity_score", "gauge", "Agent activity (1 active, 0 scaled to zero)")
        self.metrics.describe("circuit_breaker_state", "gauge", "Circuit breaker state (0 closed, 1 half-open, 2 open)")
        self.metrics.describe("sapphire_portfolio_value_usd", "gauge", "Portfolio value in USD")
        self.metrics.describe("sapphire_portfolio_day_open_value_usd", "gauge", "Portfolio value at 00:00 UTC")
        self.metrics.describe("sapphire_realized_pnl_1h_usd", "gauge", "Realized P&L of the last hour (USD)")
        self.metrics.describe("sapphire_signals_total", "counter", "Signals by agent, symbol and signal")
        self.metrics.describe("sapphire_agent_last_heartbeat_timestamp_seconds", "gauge",
                              "Last agent heartbeat, by agent, tier and release")
        self.metrics.describe("sapphire_agent_decisions_total", "counter", "Decisions by agent, tier and release")
        self.metrics.describe("sapphire_agent_errors_total", "counter", "Failed decisions by agent, tier and release")
        self.metrics.describe("sapphire_decision_latency_seconds", "histogram",
                              "Decision latency by agent, tier and release")
        self.metrics.describe("sapphire_agent_realized_pnl_usd", "gauge",
                              "Realized P&L in USD since the workload started, by agent, tier and release (may fall)")
        self.metrics.describe("sapphire_agent_realized_loss_usd_total", "counter",
                              "Realized losses in USD (the losing trades' P&L), by agent, tier and release")
        self.metrics.describe("sapphire_circuit_breaker_state", "gauge", "Breaker (0 closed, 1 half-open, 2 open)")
        self.metrics.describe("sapphire_coordinator_requests_total", "counter",
                              "Coordinator API requests by release and code")
        self.metrics.describe("sapphire_coordinator_request_duration_seconds", "histogram",
                              "Coordinator API request latency by release")
        self.metrics.describe("http_requests_total", "counter", "HTTP requests by handler and code")
        self.metrics.describe("http_request_duration_seconds", "histogram", "HTTP request latency")
        self.metrics.describe("sapphire_backup_last_success_timestamp_seconds", "gauge",
                              "Epoch of the last successful backup (from sapphire:backup:<component>)")
        self.metrics.describe("workload_rounds_total", "counter", "Synthetic rounds written")
        self.metrics.describe("workload_last_round_timestamp_seconds", "gauge", "Time of the last round")
        self.metrics.describe(STALE_EPOCH_REFUSALS, "counter",
                              "Rounds refused because Redis or PostgreSQL holds an older epoch than the workload's")
        self.metrics.set(STALE_EPOCH_REFUSALS, 0)

    def redis(self) -> redis.Redis:
        # rediss:// verifies the server's certificate (chain and name, redis-py's defaults) against the CA file.
        tls = {"ssl_ca_certs": self.redis_ca_file} if self.args.redis_url.startswith("rediss://") else {}
        return redis.Redis.from_url(self.args.redis_url, username=self.redis_username, password=self.redis_password,
                                    decode_responses=True, socket_connect_timeout=2, socket_timeout=2, **tls)

    def pg(self) -> Any:
        if not self.dsn:
            return None
        if self._pg is None or self._pg.closed:
            self._pg = psycopg.connect(self.dsn, connect_timeout=3, autocommit=True,
                                       application_name="sapphire-workload")
        return self._pg

    def round(self) -> None:
        client = self.redis()
        try:
            write_round(client, self.pg(), self.agents, self.symbols, self.args.release, self.rng, self.state,
                        self.metrics, epoch=self.args.epoch, misbehave=self.args.misbehave)
            coordinator_round(self.args.coordinator_releases, self.rng, self.metrics, self.args.misbehave)
            self.metrics.inc("workload_rounds_total")
            self.metrics.set("workload_last_round_timestamp_seconds", self.state.last_round_ts)
            self.export_backups(client)
        finally:
            client.close()

    def export_backups(self, client: redis.Redis) -> None:
        """Export the last successful backup per component (written by backup.yml) for BackupStale."""
        for key in client.scan_iter(match="sapphire:backup:*", count=100):
            name = key.decode() if isinstance(key, bytes) else key
            ts = client.hget(name, "ts")
            if ts:
                self.metrics.set("sapphire_backup_last_success_timestamp_seconds", float(ts),
                                 labels={"component": name.rsplit(":", 1)[1]})

    def loop(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.round()
            except StaleEpoch:
                pass  # write_round recorded it in last_error and logged it once
            except (redis.RedisError, psycopg.Error, OSError) as exc:
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                LOG.warning("round failed: %s", self.state.last_error)
                if self._pg is not None:
                    self._pg.close()
                    self._pg = None
            self.stop.wait(max(0.0, self.args.interval - (time.monotonic() - started)))

    def current_fault(self) -> dict[str, Any]:
        fault = dict(self.fault)
        if self.args.fault_file and self.args.fault_file.exists():
            try:
                fault.update(json.loads(self.args.fault_file.read_text(encoding="utf-8")) or {})
            except (OSError, ValueError) as exc:
                LOG.warning("fault file unreadable: %s", exc)
        return fault

    def health(self) -> tuple[int, dict[str, Any]]:
        components: dict[str, Any] = {}
        try:
            client = self.redis()
            client.ping()
            client.close()
            components["redis"] = {"status": "ok"}
        except redis.RedisError as exc:
            components["redis"] = {"status": "fail", "error": str(exc)}
        if self.dsn:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                components["postgres"] = {"status": "ok"}
            except psycopg.Error as exc:
                components["postgres"] = {"status": "fail", "error": " ".join(str(exc).split())}
        age = time.time() - self.state.last_round_ts if self.state.last_round_ts else None
        stale = age is None or age > 5 * self.args.interval
        components["writer"] = {"status": "degraded" if stale else "ok", "rounds": self.state.rounds,
                                "last_round_age_seconds": None if age is None else round(age, 1),
                                "error": self.state.last_error}
        components["epoch"] = {"status": "fail" if self.state.fenced else "ok", "epoch": self.args.epoch,
                               "error": self.state.last_error if self.state.fenced else None}
        status = "ok"
        if any(item["status"] == "fail" for item in components.values()):
            status = "fail"
        elif any(item["status"] == "degraded" for item in components.values()):
            status = "degraded"
        fault = self.current_fault()
        code = 500 if status == "fail" else 200
        if fault.get("health_status"):
            code = int(fault["health_status"])
            status = "fail" if code >= 500 else status
            components["fault"] = {"status": "fail", "detail": f"injected fault: HTTP {code}"}
        return code, {"status": status, "version": self.args.release, "components": components}


def make_handler(workload: Workload) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"sapphire-workload/{__version__}"

        def log_message(self, fmt: str, *args: Any) -> None:
            LOG.debug("%s " + fmt, self.client_address[0], *args)

        def _send(self, code: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, path: str, code: int, started: float) -> None:
            workload.metrics.inc("http_requests_total", labels={"method": self.command, "handler": path,
                                                                "code": str(code)})
            workload.metrics.observe("http_request_duration_seconds", time.monotonic() - started,
                                     labels={"handler": path})

        def do_GET(self) -> None:
            started = time.monotonic()
            path = urlsplit(self.path).path
            if path in ("/health", "/healthz", "/ready"):
                code, body = workload.health()
                self._send(code, json.dumps(body), "application/json")
            elif path == "/livez":
                code = 200
                self._send(code, json.dumps({"status": "alive"}), "application/json")
            elif path == "/metrics":
                code = 200
                self._record(path, code, started)
                self._send(code, workload.metrics.render(), "text/plain; version=0.0.4")
                return
            else:
                code = 404
                self._send(code, json.dumps({"error": "not found"}), "application/json")
            self._record(path, code, started)

        def do_POST(self) -> None:
            started = time.monotonic()
            path = urlsplit(self.path).path
            if path != "/admin/fault":
                code = 404
                self._send(code, json.dumps({"error": "not found"}), "application/json")
            elif not ipaddress.ip_address(self.client_address[0]).is_loopback:
                code = 403
                self._send(code, json.dumps({"error": "admin endpoints answer loopback clients only"}),
                           "application/json")
            else:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("body must be a JSON object")
                    workload.fault = body
                    code = 200
                    self._send(code, json.dumps({"fault": body}), "application/json")
                except ValueError as exc:
                    code = 400
                    self._send(code, json.dumps({"error": str(exc)}), "application/json")
            self._record(path, code, started)

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        workload = Workload(args)
    except (OSError, ValueError) as exc:
        LOG.error("cannot load agents from %s: %s", args.agents, exc)
        return 2
    if args.once:
        try:
            workload.round()
        except StaleEpoch:
            return 1  # logged by write_round
        except (redis.RedisError, psycopg.Error, OSError) as exc:
            LOG.error("round failed: %s: %s", type(exc).__name__, exc)
            return 1
        LOG.info("wrote one round for %d active agent(s)", sum(1 for a in workload.agents if a.replicas > 0))
        return 0
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(workload))
    server.daemon_threads = True
    writer = threading.Thread(target=workload.loop, name="writer", daemon=True)
    writer.start()

    def stop(signum: int, _frame: Any) -> None:
        LOG.info("signal %d: stopping", signum)
        workload.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info("serving /health and /metrics on %s:%d, %d agent(s), every %gs", args.bind, args.port,
             len(workload.agents), args.interval)
    server.serve_forever()
    writer.join(timeout=5)
    return 0
