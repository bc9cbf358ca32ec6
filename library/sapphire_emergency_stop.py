#!/usr/bin/python
"""Ansible module sapphire_emergency_stop: stop trading in one cluster's namespace in as few round trips as possible."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_emergency_stop
short_description: Halt the trading agents of one namespace now (halt flag, guard, scale to zero, egress), in parallel
description:
  - The kill switch of the agents role (tasks emergency_stop.yml). It sets the halt flag C(sapphire:halt) in the live
    primary among I(redis_targets) and, with concurrent requests to the Kubernetes API, writes the halt record
    (ConfigMap C(sapphire-emergency-stop) with the reason, the actor, the time and the agents' exchange egress
    policy), a ResourceQuota C(sapphire-emergency-stop) that admits no pod of the agents' priority classes, and
    every agent Deployment scaled to zero by server-side apply with its count kept in the
    C(sapphire.io/halted-replicas) annotation; the NetworkPolicy C(agents-exchange-egress) is deleted once the record
    holding it is written.
  - Best effort per step; a failing step is reported in I(steps) with C(status=failed) and the others still run;
    the module itself fails only on bad arguments. Idempotent; a count recorded by an earlier stop is kept.
  - Check mode sends every write with C(dryRun=All) (the API server admits or refuses it, nothing is stored) and
    does not touch Redis.
  - The decisions (the scale patches, which priority classes the quota names) are this module's functions
    C(halt_scale), C(needs_scale) and C(quota_classes), unit-tested in tests/unit/test_emergency_stop_module.py.
extends_documentation_fragment:
  - sapphire.kubernetes
options:
  namespace: {description: The platform's namespace., type: str, required: true}
  field_manager: {description: Server-side apply field manager (resume.yml uses the same)., type: str,
                  default: sapphire-ops-emergency-stop}
  record:
    description: The halt record, C({reason, actor, ts}); its JSON is the value of C(sapphire:halt).
    type: dict
    required: true
  labels: {description: Labels of the ConfigMap and the ResourceQuota., type: dict, default: {}}
  set_flag: {description: Set the halt flag (false when the caller halts elsewhere)., type: bool, default: true}
  redis_targets:
    description:
      - C({host, port}) of the Redis servers to halt, all written at once with SET NX - the live primary takes the
        flag (or has it), a replica refuses with READONLY and has it by replication, so no platform state is needed
        to find the primary. The step fails when no server took or had it. A server of the platform topology
        (C({host, address, port}), host its inventory name) is reached at its address.
    type: list
    elements: dict
    default: []
  redis_password: {description: Their password., type: str, no_log: true}
  redis_tls: {description: TLS to Redis (its certificate verified)., type: bool, default: false}
  redis_tls_ca_path:
    description: CA file the Redis certificate is verified against when O(redis_tls=true); unset uses the trust store.
    type: path
  tier_priority_classes:
    description: The priority classes of the agent tiers (agent_tiers), refused by the quota with those of the agents.
    type: list
    elements: str
    default: []
  protected_priority_classes:
    description: Classes the quota never names (coordinator, data services, monitoring), besides the classes of the
      platform's other Deployments.
    type: list
    elements: str
    default: []
  timeout: {description: Seconds each request may take., type: int, default: 20}
author: sapphire-ops
"""

EXAMPLES = r"""
- name: Halt, guard and scale the agents to zero
  sapphire_emergency_stop:
    kubeconfig: "{{ k8s_kubeconfig }}"
    context: "{{ k8s_context }}"
    namespace: trading-system
    record: {reason: daily loss limit, actor: oncall, ts: 1767225600.0}
    redis_targets: [{host: 10.0.0.5, port: 6379}]
    redis_password: "{{ redis_password }}"
"""

RETURN = r"""
steps:
  description: One entry per step, C({step, status, where, msg}); step is halt-flag (one per Redis server),
    halt-record, scale or egress; status ok or failed.
  type: list
  returned: always
seconds:
  description: Seconds from the module's start until the halt flag was set (C(halt_flag)) and until every agent
    Deployment was asked to scale to zero (C(scale_requested)); null when that step failed or was not run.
  type: dict
  returned: always
agents:
  description: The agent Deployments found.
  type: list
  returned: always
"""

import importlib.util
import json
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

# The kubernetes client is imported where it is used (Kube), after the halt flag is on its way: importing it takes
# most of a second, the halt flag must not wait for it.
KUBERNETES_IMPORT_ERROR = None if importlib.util.find_spec("kubernetes") else "No module named 'kubernetes'"

try:
    import redis

    REDIS_IMPORT_ERROR = None
except ImportError:
    redis = None
    REDIS_IMPORT_ERROR = traceback.format_exc()

HALT_KEY = "sapphire:halt"
HALTED_ANNOTATION = "sapphire.io/halted-replicas"
RECORD = "sapphire-emergency-stop"
EGRESS = "agents-exchange-egress"
# Seconds the halt flag gets before the Kubernetes steps start (they start at once when it is set sooner).
FLAG_HEAD_START = 0.5
PART_OF = "app.kubernetes.io/part-of=sapphire"


class ApiError(Exception):
    pass


class Kube:
    """The few Kubernetes calls of the stop, through one thread-safe connection pool."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str, timeout: int,
                 field_manager: str, dry_run: bool) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        configuration.connection_pool_maxsize = 32
        self.api = client.ApiClient(configuration)
        self.namespace = namespace
        self.timeout = timeout
        self.field_manager = field_manager
        self.dry_run = dry_run

    def _call(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json", absent_ok: bool = False) -> dict[str, Any] | None:
        """The answer's JSON; None for 404 where absence is an answer (absent_ok: a read, a delete)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.call_api(
                path, method, query_params=query or [], body=body, auth_settings=["BearerToken"],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                _preload_content=False, _return_http_data_only=True, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404 and absent_ok:
                return None
            detail = exc.reason
            try:
                detail = json.loads(exc.body).get("message") or detail
            except (TypeError, ValueError, AttributeError):
                pass
            raise ApiError(f"{exc.status} {exc.reason}: {detail}") from None
        except Exception as exc:  # refused, timed out, TLS
            raise ApiError(f"cannot reach the API server ({type(exc).__name__}: {exc})") from None
        return json.loads(response.data or b"{}")

    def path(self, group: str, resource: str, name: str = "") -> str:
        base = "/api/v1" if group == "" else f"/apis/{group}"
        return f"{base}/namespaces/{self.namespace}/{resource}" + (f"/{name}" if name else "")

    def get(self, group: str, resource: str, name: str) -> dict[str, Any] | None:
        return self._call("GET", self.path(group, resource, name), absent_ok=True)

    def list(self, group: str, resource: str, selector: str) -> list[dict[str, Any]]:
        found = self._call("GET", self.path(group, resource), query=[("labelSelector", selector)]) or {}
        return found.get("items") or []

    def apply(self, group: str, resource: str, body: dict[str, Any]) -> dict[str, Any] | None:
        query = [("fieldManager", self.field_manager), ("force", "true")] + [("dryRun", "All")] * self.dry_run
        return self._call("PATCH", self.path(group, resource, body["metadata"]["name"]), body=body, query=query,
                          content_type="application/apply-patch+yaml")

    def delete(self, group: str, resource: str, name: str) -> bool:
        query = [("dryRun", "All")] * self.dry_run
        return self._call("DELETE", self.path(group, resource, name), query=query, absent_ok=True) is not None


def address(target: dict[str, Any]) -> str:
    return str(target.get("address") or target.get("host") or "")


def labelled(deployment: dict[str, Any], key: str, value: str) -> bool:
    return ((deployment.get("metadata") or {}).get("labels") or {}).get(key) == value


def priority_class(deployment: dict[str, Any]) -> str:
    return (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("priorityClassName") or ""


def halt_scale(deployment: dict[str, Any]) -> dict[str, Any]:
    """The server-side apply patch that keeps the count in the annotation and scales to 0. A count recorded by an
    earlier stop is kept (a second stop must not record the zero the first one left)."""
    meta = deployment["metadata"]
    recorded = (meta.get("annotations") or {}).get(HALTED_ANNOTATION)
    if recorded is None:
        recorded = str((deployment.get("spec") or {}).get("replicas", 1))
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "annotations": {HALTED_ANNOTATION: str(recorded)}},
            "spec": {"replicas": 0}}


def needs_scale(deployment: dict[str, Any]) -> bool:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return HALTED_ANNOTATION not in annotations or (deployment.get("spec") or {}).get("replicas", 1) != 0


def quota_classes(agents: list[dict[str, Any]], others: list[dict[str, Any]], tiers: list[str],
                  protected: list[str]) -> list[str]:
    """The agents' priority classes (their Deployments' and the tiers'), never one a non-agent workload uses."""
    keep = {priority_class(item) for item in others} | set(protected)
    return sorted(({priority_class(item) for item in agents} | set(tiers)) - keep - {""})


class Stop:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.check = module.check_mode
        self.started = time.monotonic()
        self.steps: list[dict[str, str]] = []
        self.seconds: dict[str, float | None] = {"halt_flag": None, "scale_requested": None}
        self.changed = False
        self.where = f"{self.params['namespace']}"

    def step(self, step: str, status: str, where: str, msg: str) -> None:
        self.steps.append({"step": step, "status": status, "where": where, "msg": msg})

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    # Redis -----------------------------------------------------------------------------------------------------
    def redis_client(self, target: dict[str, Any]) -> Any:
        timeout = self.params["timeout"]
        return redis.Redis(host=address(target), port=int(target.get("port") or 6379),
                           password=self.params["redis_password"], ssl=self.params["redis_tls"],
                           ssl_ca_certs=self.params["redis_tls_ca_path"],
                           socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True)

    def halt_one(self, target: dict[str, Any], value: str) -> tuple[str, str]:
        """(outcome, message) of SET NX on one server: set, already set, replica, or unreachable."""
        try:
            client = self.redis_client(target)
            if self.check:
                current = client.get(HALT_KEY)
                return ("already", f"already set: {current}") if current else ("set", "would be set")
            if client.set(HALT_KEY, value, nx=True):
                return "set", "set"
            return "already", f"already set: {client.get(HALT_KEY)}"
        except Exception as exc:  # any client error is reported, the stop goes on
            text = f"{type(exc).__name__}: {exc}"
            return ("replica", "replica: has the flag by replication") if "READONLY" in text \
                else ("unreachable", f"not reachable: {text}")

    def halt_flag(self, pool: ThreadPoolExecutor) -> None:
        """SET NX to every target at once: the live primary takes it (or has it), a replica refuses with READONLY and
        gets it by replication. So the stop needs no platform state to find the live primary: it is one of them.
        The step fails only when no server took or had the flag."""
        value = json.dumps(self.params["record"], separators=(",", ":"))
        targets = self.params["redis_targets"]
        futures = [(target, pool.submit(self.halt_one, target, value)) for target in targets]
        outcomes = []
        for target, future in futures:
            outcome, message = future.result()
            if outcome in ("set", "already") and self.seconds["halt_flag"] is None and not self.check:
                self.seconds["halt_flag"] = self.elapsed()
            self.changed = self.changed or outcome == "set"
            outcomes.append((f"redis {address(target)}:{target.get('port') or 6379}", outcome, message))
        held = any(outcome in ("set", "already") for _, outcome, _ in outcomes)
        for where, outcome, message in outcomes:
            failed = not held and outcome in ("unreachable", "replica")
            self.step("halt-flag", "failed" if failed else "ok", where,
                      f"the halt flag could not be set: {message}" if failed else message)

    # Kubernetes ------------------------------------------------------------------------------------------------
    def kubernetes(self, pool: ThreadPoolExecutor) -> dict[str, Any]:
        params = self.params
        where = f"{params['context'] or 'cluster'} {params['namespace']}"
        try:
            kube = Kube(params["kubeconfig"], params["context"], params["namespace"], params["timeout"],
                        params["field_manager"], self.check)
            reads = [pool.submit(kube.list, "apps/v1", "deployments", PART_OF),
                     pool.submit(kube.get, "", "configmaps", RECORD),
                     pool.submit(kube.get, "networking.k8s.io/v1", "networkpolicies", EGRESS),
                     pool.submit(kube.get, "", "resourcequotas", RECORD)]
            deployments, record, egress, quota = (future.result() for future in reads)
        except Exception as exc:
            for step in ("halt-record", "scale", "egress"):
                self.step(step, "failed", where, f"the platform's objects could not be read: {exc}")
            return {"agents": []}
        agents = [item for item in deployments if labelled(item, "app.kubernetes.io/component", "agent")]
        others = [item for item in deployments if not labelled(item, "app.kubernetes.io/component", "agent")]

        # Scale first: every agent Deployment asked at once.
        scaling = [(item["metadata"]["name"], pool.submit(kube.apply, "apps/v1", "deployments", halt_scale(item)))
                   for item in agents if needs_scale(item)]
        # The record (with the egress policy it saves) and the quota beside it.
        data = {"reason": str(params["record"].get("reason", "")), "actor": str(params["record"].get("actor", "")),
                "ts": str(params["record"].get("ts", ""))}
        if egress:
            meta = egress["metadata"]
            data["egress-policy"] = json.dumps({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": meta.get("labels") or {}},
                "spec": egress.get("spec") or {}})
        existing = (record or {}).get("data") or {}
        data.update(existing)  # an earlier stop's record is kept (its reason, time and saved policy)
        record_changed = record is None or set(data) - set(existing)
        labels = params["labels"] or {}
        writes = {"record": pool.submit(kube.apply, "", "configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "data": data,
            "metadata": {"name": RECORD, "namespace": params["namespace"], "labels": labels}})}
        classes = quota_classes(agents, others, params["tier_priority_classes"], params["protected_priority_classes"])
        quota_spec = {"hard": {"pods": "0"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": classes}]}}
        if classes:
            writes["quota"] = pool.submit(kube.apply, "", "resourcequotas", {
                "apiVersion": "v1", "kind": "ResourceQuota", "spec": quota_spec,
                "metadata": {"name": RECORD, "namespace": params["namespace"], "labels": labels}})
        quota_changed = bool(classes) and (quota is None or (quota.get("spec") or {}).get("scopeSelector")
                                           != quota_spec["scopeSelector"])

        failed = []
        for name, future in scaling:
            try:
                future.result()
            except ApiError as exc:
                failed.append(f"{name}: {exc}")
        self.seconds["scale_requested"] = self.elapsed() if not failed else None
        names = ", ".join(item["metadata"]["name"] for item in agents) or "no agent Deployment"
        if failed:
            self.step("scale", "failed", where, "; ".join(failed))
        else:
            self.changed = self.changed or bool(scaling)
            self.step("scale", "ok", where, f"{names} at 0 replicas" + (" (dry run)" if self.check else ""))

        problems = []
        for what, future in writes.items():
            try:
                future.result()
            except ApiError as exc:
                problems.append(f"{what}: {exc}")
        if problems:
            self.step("halt-record", "failed", where, "; ".join(problems))
        else:
            self.changed = self.changed or bool(record_changed) or quota_changed
            self.step("halt-record", "ok", where, "ConfigMap and ResourceQuota sapphire-emergency-stop in place")

        # The egress allow goes only once the record that saves it is written (resume.yml restores it from there).
        if "record" in " ".join(problems):
            self.step("egress", "failed", where, "not removed: the halt record that saves it could not be written")
        else:
            try:
                removed = kube.delete("networking.k8s.io/v1", "networkpolicies", EGRESS) if egress else False
                self.changed = self.changed or removed
                self.step("egress", "ok", where, f"{EGRESS} removed (saved in ConfigMap {RECORD})" if removed
                          else f"{EGRESS} already absent")
            except ApiError as exc:
                self.step("egress", "failed", where, f"{EGRESS} not removed: {exc}")
        return {"agents": [item["metadata"]["name"] for item in agents]}

    def run(self) -> dict[str, Any]:
        with ThreadPoolExecutor(max_workers=32) as pool:
            halting = pool.submit(self.halt_flag, pool) if self.params["set_flag"] and self.params["redis_targets"] \
                else None
            if halting is not None:
                # The flag first: importing the Kubernetes client holds the interpreter for a few hundred milliseconds
                # and would slow the SET it races with. A Redis that does not answer delays the scale-down by
                # FLAG_HEAD_START at most.
                wait([halting], timeout=FLAG_HEAD_START)
            found = self.kubernetes(pool)
            if halting is not None:
                halting.result()
        if self.params["set_flag"] and not self.params["redis_targets"]:
            self.step("halt-flag", "failed", self.where,
                      "no Redis endpoint to halt: set agents_halt_redis_endpoint (or validate_redis_endpoint) to "
                      "{host, port} of the region's primary Redis, or add a primary to redis_hosts")
        order = {"halt-flag": 0, "halt-record": 1, "scale": 2, "egress": 3}
        self.steps.sort(key=lambda item: order[item["step"]])
        return {"changed": self.changed, "steps": self.steps, "seconds": self.seconds, **found}


def main() -> None:
    module = AnsibleModule(argument_spec={
        "kubeconfig": {"type": "path"}, "context": {"type": "str"},
        "namespace": {"type": "str", "required": True},
        "field_manager": {"type": "str", "default": "sapphire-ops-emergency-stop"},
        "record": {"type": "dict", "required": True},
        "labels": {"type": "dict", "default": {}},
        "set_flag": {"type": "bool", "default": True},
        "redis_targets": {"type": "list", "elements": "dict", "default": []},
        "redis_password": {"type": "str", "no_log": True},
        "redis_tls": {"type": "bool", "default": False},
        "redis_tls_ca_path": {"type": "path"},
        "tier_priority_classes": {"type": "list", "elements": "str", "default": []},
        "protected_priority_classes": {"type": "list", "elements": "str", "default": []},
        "timeout": {"type": "int", "default": 20},
    }, supports_check_mode=True)
    if KUBERNETES_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    if module.params["set_flag"] and module.params["redis_targets"] and REDIS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    module.exit_json(**Stop(module).run())


if __name__ == "__main__":
    main()
