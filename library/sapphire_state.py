#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_state
short_description: Read and write the platform state, take and release the operations lock, in every cluster
description:
  - The platform state (live region, epoch, per-host overrides, operation history) is kept in the clusters,
    not on a controller - ConfigMap O(state_name) in O(namespace), data key C(state.json), in every cluster
    of O(clusters). The highest epoch among the clusters that answer wins.
  - The operations lock is a C(coordination.k8s.io/v1) Lease O(lease_name) in O(namespace) of every
    cluster that answers, taken in the order of the cluster names. Writers take it; read-only runs do not;
    emergency-stop never waits for it (it uses O(action=record)).
  - O(action=read) reads the state from every cluster side by side (O(request_timeout) each). An
    unreachable cluster is data (RV(clusters), a warning), never a failure. When clusters answer but none holds
    a state the platform is fresh - epoch 0, live region C(primary) - and RV(found) is false; when no cluster
    answers RV(state) is null and RV(reachable) 0.
  - O(action=write) writes O(state) to every reachable cluster whose state differs, with optimistic
    concurrency (replace carrying C(metadata.resourceVersion), create when absent; a 409 fails and asks to
    re-run). It refuses an epoch lower than the highest found. O(history_entry) is appended to the history
    (the newest 50 are kept); when O(state) has no C(history) the winning state's history is kept.
  - O(action=record) appends O(history_entry) to the winning state without changing its epoch or live region,
    in every reachable cluster, retried up to 3 times when another run writes at the same moment.
  - O(action=acquire) creates the Lease (409 AlreadyExists = held) or updates it with its resourceVersion.
    Held by the same holder - renewed (re-entrant). Cleared holder - free. Held by another holder that has not
    renewed for C(leaseDurationSeconds) + O(skew_seconds) - taken over (RV(took_over)). Held and fresh -
    O(break_lock=true) takes it over and records O(break_reason) in the annotation C(sapphire.io/broken);
    otherwise the module fails at once naming the holder, since when, and when it goes stale, after giving back
    the leases this call took in other clusters.
  - With O(watch_pid) acquire starts a detached renewer (a copy of module_utils/sapphire_state.py run by the
    same Python in a new session) that renews the leases every max(5, O(lease_duration_seconds)/4) seconds,
    stops renewing a lease someone else changed, releases the leases as soon as process O(watch_pid) is gone,
    and ends by itself after 6 hours at the latest.
  - O(action=release) clears the holder of every reachable cluster's lease that this holder holds; a lease held
    by someone else or an unreachable cluster is a warning, never a failure.
  - Runs on the controller, once per playbook (C(run_once), C(delegate_to=localhost)).
version_added: "1.2.0"
author: sapphire-ops
options:
  clusters:
    description: Every cluster of the inventory.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Inventory name of the cluster (also orders the leases).
        type: str
        required: true
      kubeconfig:
        description: Path of its kubeconfig; empty for the default (C(KUBECONFIG), C(~/.kube/config)).
        type: path
      context:
        description: Context in the kubeconfig; empty for its current context.
        type: str
  namespace:
    description: Namespace of the state ConfigMap and the Lease; created (labelled) when missing.
    type: str
    default: sapphire-system
  action:
    description: What to do.
    type: str
    required: true
    choices: [read, write, acquire, release, record]
  state:
    description:
      - The state to write (O(action=write)) - C(epoch) (int >= 0), C(live_region), C(host_overrides)
        (host -> dict of variables), optionally C(history) (list of dicts). C(updated) and C(updated_by) are set
        by the module.
    type: dict
  history_entry:
    description:
      - An entry for the history (O(action=write) and O(action=record)), for example a DR run's report summary.
        The module adds C(id), C(ts) and C(by) when they are missing; the C(id) keeps a retried write from
        appending it twice.
    type: dict
  holder:
    description:
      - Who runs (O(action=acquire), O(action=release), O(action=record); on O(action=write) it names the writer in
        C(updated_by)). Its compact form C(playbook=<p> user=<u> controller=<host> awx_job=<id or ->) is the
        Lease's C(holderIdentity); equal holders share the lock (re-entrant).
    type: dict
    suboptions:
      playbook:
        description: The playbook.
        type: str
        required: true
      user:
        description: The operator; empty for the user running the module.
        type: str
      controller:
        description: The controller host; empty for this host's name.
        type: str
      awx_job_id:
        description: The AWX job id; empty outside AWX (shown as C(-)).
        type: raw
      run_id:
        description:
          - Optional id of this run, appended as C(run=<id>). Without it two runs of the same playbook by the same
            user on the same controller outside AWX count as the same holder.
          - With O(watch_pid=0) it defaults to C(<controller host>:<ansible-playbook pid>); a lease whose run of
            this controller has ended is then free at once for the next run.
        type: raw
  lease_name:
    description: Name of the Lease of the operations lock.
    type: str
    default: sapphire-operations
  state_name:
    description: Name of the state ConfigMap.
    type: str
    default: sapphire-state
  lease_duration_seconds:
    description: C(leaseDurationSeconds) of the Lease this module takes.
    type: int
    default: 120
  skew_seconds:
    description: Clock skew allowed between controllers before a lease that was not renewed counts as stale.
    type: int
    default: 10
  break_lock:
    description: Take the lock over from a holder that still renews it. Only when that run is known to be gone.
    type: bool
    default: false
  break_reason:
    description: Why the lock is broken; required with O(break_lock=true), kept in the Lease's annotation.
    type: str
  watch_pid:
    description:
      - O(action=acquire) only - start the detached renewer and release the leases when this process ends. It
        must be running.
      - V(0) means the ansible-playbook process that runs this task (found among the module's ancestors; the
        task's own worker process is not it - it ends with the task). The playbook pid is what a playbook wants,
        so that the lock is held exactly as long as the run.
    type: int
  request_timeout:
    description: Seconds to wait for each API request.
    type: int
    default: 5
attributes:
  check_mode:
    support: full
    description:
      - read is unchanged. write and record report what would be written, acquire whether the lock would be taken
        (a held lock is a warning, not a failure), release what would be released; nothing is changed and no
        renewer is started.
  diff_mode:
    support: partial
    description: write returns the winning state before and the state after.
requirements:
  - kubernetes (the Python client) >= 24
notes:
  - The lock gives no fencing by itself; the epoch written into the datastores at promotion does.
  - A cluster that is unreachable while the lock is taken is left out of it (a warning says so).
"""

EXAMPLES = r"""
- name: Read the platform state
  sapphire_state:
    action: read
    clusters:
      - {name: local-dr, kubeconfig: .local/clusters/local-dr/kubeconfig, context: ""}
      - {name: local-primary, kubeconfig: .local/clusters/local-primary/kubeconfig, context: ""}
  run_once: true
  delegate_to: localhost
  register: platform

- name: Take the operations lock for this run
  sapphire_state:
    action: acquire
    clusters: "{{ sapphire_state_clusters }}"
    holder:
      playbook: dr-failover.yml
      user: "{{ lookup('env', 'USER') }}"
      controller: "{{ lookup('pipe', 'hostname') }}"
      awx_job_id: "{{ awx_job_id | default('') }}"
    watch_pid: 0  # this ansible-playbook process: the lock is released when the run ends
    break_lock: "{{ sapphire_lock_break | bool }}"
    break_reason: "{{ sapphire_lock_break_reason | default(omit) }}"
  run_once: true
  delegate_to: localhost

- name: Write the new live region
  sapphire_state:
    action: write
    clusters: "{{ sapphire_state_clusters }}"
    state: "{{ platform.state | combine({'epoch': platform.state.epoch + 1, 'live_region': 'dr'}) }}"
    history_entry: {operation: dr-failover, dr_id: "{{ dr_id }}", result: promoted}
    holder: {playbook: dr-failover.yml}
  run_once: true
  delegate_to: localhost

- name: Record an emergency stop (never waits for the lock)
  sapphire_state:
    action: record
    clusters: "{{ sapphire_state_clusters }}"
    history_entry: {operation: emergency-stop, reason: "{{ reason }}"}
    holder: {playbook: emergency-stop.yml}
  run_once: true
  delegate_to: localhost

- name: Give the lock back
  sapphire_state:
    action: release
    clusters: "{{ sapphire_state_clusters }}"
    holder: {playbook: dr-failover.yml}
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
state:
  description:
    - read - the winning state (a fresh one, epoch 0 and live region C(primary), when clusters answered but none
      holds one; null when no cluster answered - an unknown state is never the home layout); write and record -
      the state written (or that would be written); null for acquire and release.
  returned: always
  type: dict
  sample: {epoch: 2, live_region: dr, host_overrides: {redis-dr: {redis_replication_role: primary}},
           history: [{operation: dr-failover, id: 6f1c, ts: "2026-11-21T01:02:03.000000Z", by: "playbook=..."}],
           updated: "2026-11-21T01:02:03.000000Z", updated_by: "playbook=dr-failover.yml user=ops ..."}
clusters:
  description:
    - One entry per cluster - name, reachable, epoch (of its state; null when it has none or for the lock
      actions) and error (why it was not reachable or its state is unreadable; null otherwise).
  returned: always
  type: list
  elements: dict
  sample: [{name: local-dr, reachable: true, epoch: 1, error: null}]
reachable:
  description: How many clusters answered.
  returned: always
  type: int
stale:
  description: Reachable clusters whose state is older than the winner's or missing (read, write, record).
  returned: always
  type: list
  elements: str
found:
  description: Whether some reachable cluster holds a state (false on a fresh platform).
  returned: always
  type: bool
unreadable:
  description: Reachable clusters whose state ConfigMap exists but cannot be parsed (they count as stale).
  returned: always
  type: list
  elements: str
source:
  description: The cluster the winning state came from (null when none holds one).
  returned: always
  type: str
written:
  description: Clusters written by write or record (in check mode, those that would be written).
  returned: always
  type: list
  elements: str
holder:
  description: The holder identity used (acquire, release).
  returned: always
  type: str
  sample: "playbook=dr-failover.yml user=ops controller=ctl-1 awx_job=-"
acquired:
  description: Clusters whose lease this holder holds after acquire (in check mode, would hold).
  returned: always
  type: list
  elements: str
took_over:
  description:
    - The previous holder when acquire took over a stale lease or broke the lock - holder, acquire_time,
      renew_time, how (C(stale) or C(broken)) and clusters; null otherwise.
  returned: always
  type: dict
held:
  description:
    - When another holder keeps the lock - cluster, holder, acquire_time, renew_time and stale_in (seconds until it
      may be taken over); null otherwise. Acquire fails with it (in check mode it warns).
  returned: always
  type: dict
released:
  description: Clusters whose lease release cleared (in check mode, would clear).
  returned: always
  type: list
  elements: str
renewer_pid:
  description: Pid of the detached renewer started by acquire with O(watch_pid); null otherwise.
  returned: always
  type: int
renewer_log:
  description: Log of that renewer (its directory is removed when it ends normally).
  returned: always
  type: str
watched_pid:
  description: The process the renewer watches (O(watch_pid), resolved when it was V(0)); null otherwise.
  returned: always
  type: int
"""

import os
import socket
import sys
import time
import traceback
from typing import Any

from ansible.module_utils import sapphire_state as state_utils
from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.sapphire_state import (
    StateFailure,
    acquire_action,
    connect,
    ended_run,
    holder_identity,
    param_problems,
    playbook_process,
    process_start,
    read_action,
    record_action,
    release_action,
    renewer_config,
    spawn_renewer,
    write_action,
)

try:
    import kubernetes  # noqa: F401
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()

ARGUMENT_SPEC: dict[str, Any] = {
    "clusters": {"type": "list", "elements": "dict", "required": True, "options": {
        "name": {"type": "str", "required": True},
        "kubeconfig": {"type": "path"},
        "context": {"type": "str"},
    }},
    "namespace": {"type": "str", "default": "sapphire-system"},
    "action": {"type": "str", "required": True, "choices": ["read", "write", "acquire", "release", "record"]},
    "state": {"type": "dict"},
    "history_entry": {"type": "dict"},
    "holder": {"type": "dict", "options": {
        "playbook": {"type": "str", "required": True},
        "user": {"type": "str"},
        "controller": {"type": "str"},
        "awx_job_id": {"type": "raw"},
        "run_id": {"type": "raw"},
    }},
    "lease_name": {"type": "str", "default": "sapphire-operations"},
    "state_name": {"type": "str", "default": "sapphire-state"},
    "lease_duration_seconds": {"type": "int", "default": 120},
    "skew_seconds": {"type": "int", "default": 10},
    "break_lock": {"type": "bool", "default": False},
    "break_reason": {"type": "str"},
    "watch_pid": {"type": "int"},
    "request_timeout": {"type": "int", "default": 5},
}


def current_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER") or "-"


def holder_of(holder: dict[str, Any] | None, fallback_playbook: str = "-") -> str:
    """The holder identity, with this user and host where the holder leaves them empty."""
    holder = dict(holder or {"playbook": fallback_playbook})
    holder["user"] = holder.get("user") or current_user()
    holder["controller"] = holder.get("controller") or socket.gethostname()
    return holder_identity(holder)


def renewer_source() -> str:
    """This run's copy of module_utils/sapphire_state.py (inside the AnsiballZ payload, which is deleted after)."""
    loader = getattr(state_utils, "__loader__", None)
    source = loader.get_source(state_utils.__name__) if loader is not None and hasattr(loader, "get_source") else None
    if not source:
        with open(state_utils.__file__, encoding="utf-8") as handle:
            source = handle.read()
    return source


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    action = params["action"]
    clusters = [connect(item, params["namespace"], params["request_timeout"]) for item in params["clusters"]]
    if action == "read":
        return read_action(clusters, params["state_name"])
    if action == "write":
        return write_action(clusters, params["state_name"], params["namespace"], params["state"],
                            params["history_entry"], holder_of(params["holder"]), time.time(), module.check_mode)
    ours = holder_of(params["holder"])
    if action == "record":
        return record_action(clusters, params["state_name"], params["namespace"], params["history_entry"], ours,
                             time.time, module.check_mode)
    if action == "release":
        return release_action(clusters, params["lease_name"], ours, time.time, module.check_mode)
    controller = socket.gethostname()

    def ended(holder: str) -> bool:  # a run of this controller that has ended: its lease is free at once
        return ended_run(holder, controller, lambda pid: process_start(pid) is not None)

    result = acquire_action(clusters, params["lease_name"], params["namespace"], ours, time.time,
                            params["lease_duration_seconds"], params["skew_seconds"], params["break_lock"],
                            params["break_reason"], module.check_mode, ended=ended)
    if params["watch_pid"] is not None and result["acquired"] and not module.check_mode:
        specs = [item for item in params["clusters"] if item["name"] in result["acquired"]]
        config = renewer_config(specs, params["namespace"], params["lease_name"], ours,
                                params["lease_duration_seconds"], params["request_timeout"], params["watch_pid"])
        result["watched_pid"] = params["watch_pid"]
        try:
            result["renewer_pid"], result["renewer_log"] = spawn_renewer(config, renewer_source(), sys.executable)
        except OSError as exc:
            result["warnings"].append(f"could not start the lease renewer ({exc}); the lock goes stale after "
                                      f"{params['lease_duration_seconds']} s unless acquire runs again")
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("action", "write", ["state"]), ("action", "record", ["history_entry", "holder"]),
                     ("action", "acquire", ["holder"]), ("action", "release", ["holder"]),
                     ("break_lock", True, ["break_reason"])],
        supports_check_mode=True,
    )
    if module.params["watch_pid"] == 0 and module.params["action"] == "acquire":
        module.params["watch_pid"] = playbook_process(os.getpid())
        if module.params["watch_pid"] is None:
            module.fail_json(msg="watch_pid 0 means the ansible-playbook process running this task, and none was "
                                 "found among this module's parent processes; pass the pid to watch")
        # The run is that process: a lease it leaves behind is free at once for the next run of this controller.
        holder = module.params["holder"]
        if holder is not None and not holder.get("run_id"):
            holder["run_id"] = f"{socket.gethostname()}:{module.params['watch_pid']}"
    problems = param_problems(module.params)
    if problems:
        module.fail_json(msg="; ".join(problems))
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    try:
        result = run(module)
    except StateFailure as exc:
        failed = dict(exc.result)
        for warning in failed.pop("warnings", []):
            module.warn(warning)
        failed.pop("diff", None)
        module.fail_json(msg=exc.msg, **failed)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
