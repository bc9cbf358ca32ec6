"""The redis role's self-managed provider (redis_external_provider self_managed): Redis servers the toolkit reaches
over the network with the password but whose hosts it cannot log in to.

Two throw-away servers (tests/integration/conftest.py) stand for the two regions: `old` a primary with data, `new`
its replica.
- remote_promote on `new`: a primary that kept the dataset; --check promotes nothing; a second run changes nothing.
- remote_follow on `old` after it took a write the new primary does not have: its dataset is copied to the
  controller first (the write is in the copy), then it follows `new` and refuses writes (READONLY); a second run
  changes nothing and copies nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import REDIS_USER_PASSWORDS, RedisServer, start_redis, traversable_tmp
from sapphire_testlib import PlaybookResult, run_playbook, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PLAYBOOK = "tests/integration/playbooks/redis_entry_point.yml"


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, Any]]:
    path = traversable_tmp()
    old = start_redis(path)
    new = start_redis(path)
    old.client().set("trade:1", "filled")
    new.client().replicaof("127.0.0.1", old.port)
    wait_for(lambda: new.client().get("trade:1") == "filled", 30, "the replica has the data")
    yield {"old": old, "new": new, "copies": path / "copies"}
    for server in (old, new):
        server.stop()


def run(server: RedisServer, entry_point: str, check: bool = False, **variables: Any) -> PlaybookResult:
    return run_playbook(PLAYBOOK, "localhost,", check=check, extra_vars={
        "redis_entry_point": entry_point, "ansible_python_interpreter": sys.executable,
        "redis_external_host": "127.0.0.1", "redis_external_port": server.port, "redis_password": server.password,
        "redis_external_tls": False,  # the test servers are plain; the role's default is TLS on
        # A replica authenticates to its primary as the replication ACL user every test Redis has.
        "redis_replication_password": REDIS_USER_PASSWORDS["redis_replication_password"],
        **variables})


def recorded(result: PlaybookResult) -> dict[str, Any]:
    shown = result.task_results("Show what it recorded").get("localhost")
    assert shown, f"the playbook did not get to the end:\n{result.explain()}"
    return json.loads(shown["msg"])


def role(server: RedisServer) -> str:
    return str(server.client().info("replication")["role"])


def test_the_replica_is_promoted_over_the_network_with_its_data(pair: dict[str, Any]) -> None:
    new: RedisServer = pair["new"]
    checked = run(new, "remote_promote", check=True)
    assert checked.rc == 0, checked.explain()
    assert role(new) == "slave", "--check promoted the replica"

    result = run(new, "remote_promote")
    assert result.rc == 0, result.explain()
    assert recorded(result)["remote_promotion"]["role"] == "master"
    assert role(new) == "master" and new.client().get("trade:1") == "filled"
    new.client().set("trade:2", "after-promotion")

    again = run(new, "remote_promote")
    assert again.rc == 0 and again.changed == 0, again.changed_tasks()


def test_the_old_primary_is_copied_aside_then_follows_the_new_one(pair: dict[str, Any]) -> None:
    old: RedisServer = pair["old"]
    new: RedisServer = pair["new"]
    old.client().set("post-fork-order", "only-on-the-old-primary")  # a write after the fork
    follow = {"redis_remote_primary_host": "127.0.0.1", "redis_remote_primary_port": new.port,
              "redis_remote_copy_dir": str(pair["copies"])}

    result = run(old, "remote_follow", **follow)
    assert result.rc == 0, result.explain()
    record = recorded(result)["remote_follow"]
    assert record["was"] == "master" and record["role"] == "slave", record
    copy = Path(record["copy"])
    assert copy.parent == pair["copies"] and b"post-fork-order" in copy.read_bytes(), record

    info = old.client().info("replication")
    assert info["role"] == "slave" and info["master_port"] == new.port
    wait_for(lambda: old.client().get("trade:2") == "after-promotion", 30, "the old primary has the new one's data")
    assert old.client().get("post-fork-order") is None
    with pytest.raises(redis.exceptions.ReadOnlyError):
        old.client().set("x", "1")

    again = run(old, "remote_follow", **follow)
    assert again.rc == 0 and again.changed == 0, again.changed_tasks()
    assert list(pair["copies"].iterdir()) == [copy], "a second run copied again"


def test_a_server_that_does_not_answer_is_named_and_nothing_changes(pair: dict[str, Any], tmp_path: Path) -> None:
    gone = RedisServer(port=1, password="x", directory=tmp_path)
    result = run(gone, "remote_follow", redis_remote_primary_host="127.0.0.1", redis_remote_primary_port=2,
                 redis_remote_copy_dir=str(tmp_path / "copies"))
    assert result.rc != 0
    assert "127.0.0.1:1 (redis_external_host, redis_external_port) does not answer" in " ".join(
        " ".join(result.failure_messages()).split()), result.explain()
    assert not (tmp_path / "copies").exists()
