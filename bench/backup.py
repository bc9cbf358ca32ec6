#!/usr/bin/env python3
"""`make bench` (backup part): backup and restore of a PostgreSQL of about 1 GiB through the toolkit (pgBackRest into
the object store, as backup.yml and restore.yml run it) against the raw tool on the same data, the object store's
upload rate, and a point-in-time restore.

Its own servers, made by the roles from a throw-away inventory (tests/integration/test_dr.py's DataServers with an
object store of their own: SeaweedFS's S3 server over HTTPS, pgBackRest archiving into it), so the local default is
never touched. Steps, each timed on the wall clock:
  1. fill the trades table to --gib of data (one INSERT ... generate_series, then CHECKPOINT);
  2. raw backup: pg_basebackup -D <dir> -Fp -X stream -c fast (plain, uncompressed: the raw tool at its fastest);
  3. toolkit backup: `pgbackrest backup --repo=1 --type=full` with the configuration the role rendered (what
     backup.yml runs per repository: lz4, AES-256 repository cipher, 2 processes, over HTTPS into the bucket);
     then the same backup into a repository on local disk (posix, same cipher and compression): the tool without the
     object store, which shares this machine's cores (TLS, SSE, its writes) in the bucket run;
  4. raw restore: copy the raw backup into an empty directory and start a server on it until it accepts connections;
     toolkit restore: `pgbackrest restore` into an empty directory and start it until it is promoted;
  5. upload rate: a 256 MiB file put into the bucket with boto3 (what amazon.aws.s3_object uses);
  6. backup.yml end to end (both repositories, Redis, the verification restore: it also gives restore.yml a manifest);
  7. PITR: restore.yml -e restore_target_time=<after step 3> -e restore_components=[postgres] (the whole playbook:
     find, restore the set of step 3 into a scratch server, replay the archived WAL, verify).
Throughput ratios are raw time / toolkit time (target >= 0.9). Results: bench/results/backup.json and the table
between the backup-bench markers of README.md.

    .venv/bin/python bench/backup.py [--gib 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT / "tests" / "integration")]

from test_dr import PG_BIN, DataServers  # the tests' server harness, reused as is

MARKERS = ("<!-- backup-bench:start -->", "<!-- backup-bench:end -->")


def log(message: str) -> None:
    print(f"[backup-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(command: list[str], **kwargs: Any) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)
    return time.monotonic() - started


def as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command]


def database_bytes(servers: DataServers) -> int:
    with servers.admin("pg-primary", "postgres") as conn:
        return int(conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0])


def fill(servers: DataServers, gib: float) -> float:
    """Trades of today's partition until the cluster holds about `gib` GiB; returns the seconds it took."""
    rows = int(gib * 1024 ** 3 / 100)  # a trade row with its index entries is about 100 bytes (measured)
    started = time.monotonic()
    with servers.admin("pg-primary") as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                     "SELECT now(), 'BTCUSDT', 'bench', 'buy', 1, 50000 + i %% 1000, 'bench-' || i "
                     "FROM generate_series(1, %s) AS i", (rows,))
        conn.execute("CHECKPOINT")
    return time.monotonic() - started


def start_and_wait(data: Path, port: int, promoted: bool) -> float:
    """Start a server on `data` with a minimal configuration of its own on a private socket (the role keeps
    postgresql.conf outside the data directory, so a copy has none); seconds until it accepts connections (and, when
    `promoted`, left recovery)."""
    home = data.parent / f"{data.name}-server"
    home.mkdir(mode=0o700)
    files = {
        "postgresql.conf": (f"data_directory = '{data}'\nhba_file = '{home}/pg_hba.conf'\n"
                            f"ident_file = '{home}/pg_ident.conf'\nlisten_addresses = ''\nport = {port}\n"
                            f"unix_socket_directories = '{home}'\narchive_mode = off\nhot_standby = off\n"
                            "max_connections = 200\nshared_buffers = '128MB'\n"),
        "pg_hba.conf": "local all postgres peer\n",
        "pg_ident.conf": "",
    }
    for name, content in files.items():
        (home / name).write_text(content)
    subprocess.run(["chown", "-R", "postgres:postgres", str(home)], check=True)
    started = time.monotonic()
    subprocess.run(as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", f"-c config_file={home}/postgresql.conf",
                               "-l", str(home / "log"), "-w", "-t", "3600", "start"), check=True, capture_output=True)
    while True:
        got = subprocess.run(as_postgres(str(PG_BIN / "psql"), "-h", str(home), "-p", str(port), "-qAt",
                                         "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"),
                             capture_output=True, text=True)
        if got.returncode == 0 and (got.stdout.strip() == "f" or not promoted):
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    subprocess.run(as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
                   check=False, capture_output=True)
    return elapsed


def scratch(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(mode=0o700)
    shutil.chown(path, "postgres", "postgres")
    return path


def run(gib: float, results_dir: Path) -> dict[str, Any]:
    servers = DataServers.start("sapphire-bench-backup-", backup_store=True)
    work = Path(tempfile.mkdtemp(prefix="sapphire-bench-backup-work-"))
    work.chmod(0o755)
    try:
        conf = servers.pg_dir("pg-primary") / "conf" / "pgbackrest.conf"
        pgbackrest = as_postgres("pgbackrest", f"--config={conf}", "--stanza=sapphire")
        log(f"filling about {gib} GiB")
        fill_seconds = fill(servers, gib)
        size = database_bytes(servers)
        log(f"{size / 1024 ** 3:.2f} GiB in {fill_seconds:.0f} s; raw backup (pg_basebackup, plain)")
        raw_dir = scratch(work, "raw")
        raw_backup = timed(as_postgres(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1",
                                       "-p", str(servers.ports["pg-primary"]), "-U", "replicator", "-D", str(raw_dir),
                                       "-Fp", "-X", "stream", "-c", "fast"),
                           env={**os.environ, "PGPASSWORD": servers.secrets["postgres_replication_password"]})
        log(f"raw backup {raw_backup:.1f} s; toolkit backup (pgBackRest into the bucket)")
        toolkit_backup = timed([*pgbackrest, "--repo=1", "--type=full", "backup"])
        # pgBackRest keeps a backup's stop time in whole seconds: a target in the same second would choose no set.
        time.sleep(1.5)
        target = datetime.now(UTC)
        log(f"toolkit backup {toolkit_backup:.1f} s; the same into a repository on local disk")
        posix = scratch(work, "posix-repo")
        local_repo = ["--repo=1", "--repo1-type=posix", f"--repo1-path={posix}"]
        timed([*pgbackrest, *local_repo[1:], "stanza-create"])
        # The WAL goes on to the buckets (archive_command): this repository holds the backup's files only.
        local_backup = timed([*pgbackrest, *local_repo, "--type=full", "--no-archive-check", "backup"])
        time.sleep(1.5)
        with servers.admin("pg-primary", "postgres") as conn:
            conn.execute("SELECT pg_switch_wal()")
        log(f"local-repository backup {local_backup:.1f} s; raw restore (copy, start)")
        raw_copy_dir = scratch(work, "raw-restore")
        raw_copy = timed(["cp", "-a", f"{raw_dir}/.", str(raw_copy_dir)])
        (raw_copy_dir / "standby.signal").unlink(missing_ok=True)
        raw_start = start_and_wait(raw_copy_dir, 25500, promoted=False)
        log("toolkit restore (pgbackrest restore, recovery to the backup's end)")
        restored = scratch(work, "toolkit-restore")
        toolkit_restore = timed([*pgbackrest, "--repo=1", f"--pg1-path={restored}", "--type=immediate",
                                 "--target-action=promote", "restore"])
        toolkit_start = start_and_wait(restored, 25501, promoted=True)
        log("upload rate (256 MiB with boto3)")
        blob = work / "blob"
        blob.write_bytes(os.urandom(256 * 1024 ** 2))
        started = time.monotonic()
        servers.s3().upload_file(str(blob), "sapphire-test-primary", "bench/blob")
        upload_seconds = time.monotonic() - started
        log("backup.yml end to end (both regions' repositories, Redis, the verification restore)")
        started = time.monotonic()
        whole = servers.run("backup.yml", timeout=7200)
        backup_yml_seconds = time.monotonic() - started
        if whole.rc != 0:
            raise RuntimeError("backup.yml failed:\n" + whole.explain())
        log("PITR through restore.yml (to a time after the timed backup, before backup.yml's)")
        started = time.monotonic()
        pitr = servers.run("restore.yml", extra_vars={"restore_target_time": target.isoformat(),
                                                      "restore_components": ["postgres"]}, timeout=7200)
        pitr_seconds = time.monotonic() - started
        if pitr.rc != 0:
            raise RuntimeError("restore.yml (PITR) failed:\n" + pitr.explain())
        raw_restore, toolkit_restore_total = raw_copy + raw_start, toolkit_restore + toolkit_start
        results = {
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average": list(os.getloadavg())},
            "database_bytes": size, "fill_seconds": round(fill_seconds, 1),
            "backup": {"raw_seconds": round(raw_backup, 1), "toolkit_seconds": round(toolkit_backup, 1),
                       "throughput_ratio": round(raw_backup / toolkit_backup, 2),
                       "local_repository_seconds": round(local_backup, 1),
                       "local_repository_ratio": round(raw_backup / local_backup, 2)},
            "restore": {"raw_seconds": round(raw_restore, 1), "toolkit_seconds": round(toolkit_restore_total, 1),
                        "throughput_ratio": round(raw_restore / toolkit_restore_total, 2)},
            "upload_mib_per_second": round(256 / upload_seconds, 1),
            "pitr_restore_yml_seconds": round(pitr_seconds, 1),
            "backup_yml_seconds": round(backup_yml_seconds, 1),
        }
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "backup.json").write_text(json.dumps(results, indent=2) + "\n")
        return results
    finally:
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


def markdown(results: dict[str, Any]) -> str:
    backup, restore = results["backup"], results["restore"]

    def verdict(ratio: float) -> str:
        return "met" if ratio >= 0.9 else "NOT met"

    return "\n".join([
        MARKERS[0],
        f"Measured by `.venv/bin/python bench/backup.py` on {results['measured_at']} "
        f"({results['machine']['cpus']} CPUs, "
        f"load average {' / '.join(f'{value:.2f}' for value in results['machine']['load_average'])} at the end): a "
        f"PostgreSQL of {results['database_bytes'] / 1024 ** 3:.2f} GiB. Seconds of wall-clock time; "
        "`bench/results/backup.json`.",
        "",
        "| step | raw tool | toolkit | raw / toolkit (target >= 0.9) |",
        "| --- | --- | --- | --- |",
        "| backup: `pg_basebackup -Fp` to local disk / pgBackRest full into the bucket (lz4, AES-256, HTTPS) | "
        f"{backup['raw_seconds']} | {backup['toolkit_seconds']} | {backup['throughput_ratio']} "
        f"({verdict(backup['throughput_ratio'])}) |",
        "| backup, the tool alone: `pg_basebackup -Fp` / pgBackRest full into a repository on local disk "
        f"(lz4, AES-256; no object store) | {backup['raw_seconds']} | {backup['local_repository_seconds']} | "
        f"{backup['local_repository_ratio']} |",
        f"| restore: copy + start / `pgbackrest restore` + recovery to the backup's end | {restore['raw_seconds']} | "
        f"{restore['toolkit_seconds']} | {restore['throughput_ratio']} ({verdict(restore['throughput_ratio'])}) |",
        f"| object store upload (256 MiB, boto3) | | {results['upload_mib_per_second']} MiB/s | |",
        f"| PITR: `restore.yml -e restore_target_time=...` (scratch, WAL replay, verification) | | "
        f"{results['pitr_restore_yml_seconds']} | |",
        "| `backup.yml` end to end (full backups into both regions' repositories, Redis, verification) | | "
        f"{results['backup_yml_seconds']} | |",
        MARKERS[1],
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()
    results = run(args.gib, args.results_dir)
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    if MARKERS[0] in text and args.results_dir == BENCH_DIR / "results":
        head, _, rest = text.partition(MARKERS[0])
        _, _, tail = rest.partition(MARKERS[1])
        readme.write_text(head + markdown(results) + tail)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
