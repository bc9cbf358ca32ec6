"""The workload exports the last backup per component, so BackupStale sees real backups."""

from __future__ import annotations

from sapphire_workload.cli import Workload


class FakeRedis:
    def __init__(self, hashes: dict[str, dict[str, str]]) -> None:
        self.hashes = hashes

    def scan_iter(self, match: str, count: int):
        prefix = match.rstrip("*")
        return iter([key.encode() for key in self.hashes if key.startswith(prefix)])

    def hget(self, key: str, field: str):
        return self.hashes.get(key, {}).get(field)


def test_backup_timestamps_become_the_backup_metric() -> None:
    workload = Workload.__new__(Workload)
    from sapphire_workload.metrics import Registry

    workload.metrics = Registry()
    workload.metrics.describe("sapphire_backup_last_success_timestamp_seconds", "gauge", "last backup")
    workload.export_backups(FakeRedis({"sapphire:backup:postgres": {"ts": "1700000000", "id": "x"},
                                       "sapphire:backup:redis": {"id": "never-finished"},
                                       "sapphire:agent:momentum:heartbeat": {"ts": "1"}}))
    text = workload.metrics.render()
    assert 'sapphire_backup_last_success_timestamp_seconds{component="postgres"} 1700000000' in text
    assert 'component="redis"' not in text
