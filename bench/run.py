#!/usr/bin/env python3
"""`make bench`: how long deploy, no-op re-deploy and validate take for ensembles of 6, 60 and
300 agents, against `kubectl apply --server-side` of the same rendered manifests.

Everything runs on the bench's own kwok cluster (`bench`, ports 23xxx, state in
bench/work/local) with its own host-mode Redis, PostgreSQL, Prometheus and synthetic workload,
so the local default is never touched. First the fresh deploy of the smallest size: `cluster.yml`,
then `deploy.yml` with every host, from nothing (teardown removes the bench's state after each run),
as `make deploy` after `make purge`; the no-op target compares with it. Then per size:
  1. deploy.yml into an empty namespace (bench-ansible-<n>), 2. deploy.yml again (must change 0),
  3. validate.yml, 4. the same objects rendered (bench/render.yml) and applied with kubectl
  into another empty namespace (bench-kubectl-<n>), waiting until every Deployment is available.
Results: bench/results/bench.json and bench.png, and the table between the bench markers of
README.md. A run with other --sizes writes to bench/work/results unless --results-dir says otherwise.

    .venv/bin/python bench/run.py [--sizes 6,60,300] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib  # bench/benchlib.py: Python puts the script's directory first on sys.path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

WORK_DIR = BENCH_DIR / "work"
LOCAL_DIR = WORK_DIR / "local"
DEFAULT_SIZES = (6, 60, 300)
VENV_BIN = Path(sys.executable).parent


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def kube_binary(name: str) -> Path:
    match = re.search(r"k8s\.io/kubernetes (v[0-9.]+)", (REPO_ROOT / "tools" / "kube" / "go.mod").read_text())
    version = match.group(1) if match else "unknown"
    cache = Path(os.environ.get("SAPPHIRE_CACHE", Path.home() / ".cache" / "sapphire-ops"))
    return cache / "kube" / version / name


# --- running things ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: list[int], keep: bool) -> None:
        self.sizes = sizes
        self.keep = keep
        self.kubectl = kube_binary("kubectl")
        self.logs = WORK_DIR / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = LOCAL_DIR / "clusters" / "bench" / "kubeconfig"
        self.pki = LOCAL_DIR / "clusters" / "bench" / "pki"

    def inventory_dir(self, size: int) -> Path:
        return WORK_DIR / f"inventory-{size}"

    def ansible(self, playbook: str, size: int, label: str, extra: list[str] | None = None) -> dict[str, Any]:
        """Run one playbook on the bench inventory of `size`; its wall time, rc and bench_stats."""
        stats_file = self.logs / f"{label}.stats.json"
        stats_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "ANSIBLE_CALLBACK_PLUGINS": str(BENCH_DIR / "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "bench_stats",
            "BENCH_STATS_FILE": str(stats_file),
            "ANSIBLE_NOCOLOR": "1",
        })
        # The bench has no object store of backups: deploy.yml runs without its play (tag backup_store), as it did
        # before deploy ensured one; backups have their own benchmark (bench/backup.py).
        skip = ["--skip-tags", "backup_store"] if playbook == "deploy.yml" else []
        command = [str(VENV_BIN / "ansible-playbook"), playbook, "-i", str(self.inventory_dir(size)), *skip,
                   *(extra or [])]
        with open(self.logs / f"{label}.log", "w", encoding="utf-8") as output:
            started = time.monotonic()
            proc = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, check=False)
            seconds = time.monotonic() - started
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {"tasks": [], "stats": {}}
        return {"rc": proc.returncode, "seconds": round(seconds, 2), "stats": stats,
                "log": str(self.logs / f"{label}.log")}

    def require(self, outcome: dict[str, Any], what: str) -> None:
        if outcome["rc"] != 0:
            tail = Path(outcome["log"]).read_text(errors="replace")[-4000:]
            raise SystemExit(f"{what} failed (rc {outcome['rc']}); log {outcome['log']}:\n{tail}")

    def run_kubectl(self, args: list[str], label: str, timeout: int = 900, verbose: bool = True) -> tuple[int, str]:
        """kubectl of the pinned release against the bench cluster; rc and output (-v=6 to count requests)."""
        command = [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args] + (["-v=6"] if verbose else [])
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        with open(self.logs / f"{label}.kubectl.log", "a", encoding="utf-8") as output:
            output.write(f"$ {' '.join(command)}\n{proc.stdout}{proc.stderr}\n")
        return proc.returncode, proc.stdout + proc.stderr

    def api_requests(self) -> dict[str, float]:
        """apiserver_request_total per verb, read with the bench cluster's admin certificate."""
        import requests

        port = benchlib.PORTS["cluster_port_base"] + 443
        response = requests.get(f"https://127.0.0.1:{port}/metrics", timeout=30, verify=str(self.pki / "ca.crt"),
                                cert=(str(self.pki / "admin.crt"), str(self.pki / "admin.key")))
        response.raise_for_status()
        return benchlib.apiserver_requests(response.text)

    # --- phases ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        LOCAL_DIR.chmod(0o755)  # the redis, postgres and prometheus users enter their state dirs
        if not (LOCAL_DIR / "clusters" / "bench").exists():
            busy = [port for port in benchlib.bench_ports() if port_in_use(port)]
            if busy:
                raise SystemExit(f"ports {busy} are in use; the bench needs {benchlib.bench_ports()} free on 127.0.0.1 "
                                 "(change benchlib.PORTS or stop what listens there)")
        # Throw-away secrets, kept between runs; one a newer platform requires is added to a file kept from before.
        secret_file = WORK_DIR / "secrets.json"
        bench_secrets = json.loads(secret_file.read_text()) if secret_file.exists() else {}
        if missing := [name for name in benchlib.SECRET_NAMES if not bench_secrets.get(name)]:
            bench_secrets.update({name: f"bench-{secrets.token_urlsafe(18)}" for name in missing})
            secret_file.write_text(json.dumps(bench_secrets))
            secret_file.chmod(0o600)
        tiers = local_agent_tiers()
        for size in self.sizes:
            directory = self.inventory_dir(size)
            directory.mkdir(parents=True, exist_ok=True)
            hosts = directory / "hosts.yml"
            document = benchlib.inventory(size, str(LOCAL_DIR), bench_secrets, tiers)
            hosts.write_text(json.dumps(document, indent=1) + "\n")
            hosts.chmod(0o600)

    def bootstrap(self) -> dict[str, Any]:
        """The fresh deploy of the first size, from nothing when the bench's state was empty: `cluster.yml`, then
        `deploy.yml` with every host (clusters, object store, servers, platform, workload), as `make deploy` does
        after `make purge`. Its time is the fresh deploy the no-op re-deploy is compared with."""
        first = self.sizes[0]
        # What teardown.yml removes: the cluster's and the servers' state (the controller's state cache may stay).
        kept = [name for name in ("clusters/bench", "redis", "postgres", "prometheus", "workload")
                if (LOCAL_DIR / name).exists()]
        from_nothing = not kept
        # The cluster first: every playbook reads the platform state from the clusters (playbooks/boilerplate.yml).
        log(f"fresh deploy ({'from nothing' if from_nothing else 'NOT from nothing, kept: ' + ', '.join(kept)}): "
            "kwok cluster `bench`")
        cluster = self.ansible("playbooks/cluster.yml", first, "fresh-cluster")
        self.require(cluster, "cluster.yml of the fresh deploy")
        log(f"fresh deploy: cluster in {cluster['seconds']} s; deploy.yml of {first} agents with every host")
        deploy = self.ansible("deploy.yml", first, "fresh-deploy")
        self.require(deploy, "deploy.yml of the fresh deploy")
        seconds = round(cluster["seconds"] + deploy["seconds"], 2)
        log(f"fresh deploy: deploy.yml in {deploy['seconds']} s; {seconds} s in all")
        return {"size": first, "from_nothing": from_nothing, "seconds": seconds,
                "cluster_seconds": cluster["seconds"], "deploy_seconds": deploy["seconds"]}

    def measured_ansible(self, playbook: str, size: int, label: str) -> dict[str, Any]:
        before = self.api_requests()
        outcome = self.ansible(playbook, size, label)
        after = self.api_requests()
        summary = benchlib.task_summary(outcome["stats"])
        return {
            "seconds": outcome["seconds"], "rc": outcome["rc"], **summary,
            "api_requests": benchlib.counter_delta(before, after)["total"],
            "api_requests_by_verb": benchlib.counter_delta(before, after),
            "seconds_by_play": benchlib.seconds_by_play(outcome["stats"]),
            "slowest_tasks": benchlib.slowest_tasks(outcome["stats"]),
            "log": outcome["log"], "_outcome": outcome,
        }

    def measure(self, size: int) -> dict[str, Any]:
        ansible_ns = benchlib.namespace_for(size, "ansible")
        kubectl_ns = benchlib.namespace_for(size, "kubectl")
        self.delete_namespaces([ansible_ns, kubectl_ns])
        self.ansible("bench/stop-workload.yml", size, f"{size}-stop-workload")
        load_before = os.getloadavg()

        log(f"{size} agents: deploy into the empty namespace {ansible_ns}")
        deploy = self.measured_ansible("deploy.yml", size, f"{size}-deploy")
        self.require(deploy.pop("_outcome"), f"deploy of {size} agents")
        log(f"{size} agents: deploy {deploy['seconds']} s, {deploy['tasks']} tasks, {deploy['changed']} changed")

        redeploy = self.measured_ansible("deploy.yml", size, f"{size}-redeploy")
        self.require(redeploy.pop("_outcome"), f"re-deploy of {size} agents")
        log(f"{size} agents: re-deploy {redeploy['seconds']} s, changed={redeploy['changed']}")

        validate = self.measured_ansible("validate.yml", size, f"{size}-validate")
        validate.pop("_outcome")
        report_file = LOCAL_DIR / "reports" / str(size) / "validate.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        validate["healthy"] = validate["rc"] == 0 and bool(report.get("healthy"))
        validate["checks"] = sum(int(value) for value in report.get("summary", {}).values())
        validate["summary"] = report.get("summary", {})
        validate["problems"] = report.get("problems", [])
        log(f"{size} agents: validate {validate['seconds']} s, healthy={validate['healthy']}, "
            f"{validate['checks']} checks")

        stop = self.emergency_stop(size, ansible_ns)
        log(f"{size} agents: emergency-stop halt flag {stop['halt_flag_seconds']} s after the first task, every agent "
            f"asked to scale to "
            f"zero at {stop['scaled_seconds']} s, no agent pod at {stop['no_pod_seconds']} s, "
            f"playbook {stop['seconds']} s")

        kubectl = self.kubectl_apply(size, ansible_ns, kubectl_ns)
        log(f"{size} agents: kubectl apply + wait {kubectl['seconds']} s ({kubectl['objects']} objects)")
        self.delete_namespaces([kubectl_ns])
        return {"size": size, "tiers": benchlib.tier_counts(size), "objects": kubectl["objects"],
                "deploy": deploy, "redeploy": redeploy, "validate": validate, "emergency_stop": stop,
                "kubectl": kubectl,
                "load_average_before": [round(value, 2) for value in load_before],
                "load_average_after": [round(value, 2) for value in os.getloadavg()]}

    def emergency_stop(self, size: int, namespace: str) -> dict[str, Any]:
        """emergency-stop.yml on the deployed ensemble, timed from outside: a watcher polls the Redis halt flag and the
        agent Deployments and pods every 20 ms from the moment the playbook starts. Then resume.yml (not timed)."""
        import redis
        from kubernetes import client, config

        password = json.loads((WORK_DIR / "secrets.json").read_text())["redis_password"]
        # The bench's Redis speaks TLS only (the redis role's redis_tls), against the platform CA the pki role made.
        halt = redis.Redis(host="127.0.0.1", port=benchlib.PORTS["redis"], password=password, socket_timeout=5,
                           ssl=True, ssl_ca_certs=str(LOCAL_DIR / "pki" / "ca.crt"))
        halt.delete("sapphire:halt")
        api = config.new_client_from_config(str(self.kubeconfig))
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        selector = "app.kubernetes.io/component=agent"
        seen: dict[str, float | None] = {"halt_flag": None, "scaled": None, "no_pod": None}
        done = threading.Event()

        # The lists are read as plain JSON: the client's model objects cost ~2 s of CPU per poll at 300 agents, which
        # made the watcher see the scale-down late and took one of the machine's two CPUs from the stop it times.
        def items(answer: Any) -> list[dict[str, Any]]:
            return json.loads(answer.data).get("items") or []

        def watch(started: float) -> None:
            while not done.is_set() or seen["no_pod"] is None:
                now = time.monotonic() - started
                if seen["halt_flag"] is None and halt.exists("sapphire:halt"):
                    seen["halt_flag"] = round(now, 2)
                if seen["scaled"] is None and all(
                        (item["spec"].get("replicas") or 0) == 0
                        for item in items(apps.list_namespaced_deployment(namespace, label_selector=selector,
                                                                          _preload_content=False))):
                    seen["scaled"] = round(time.monotonic() - started, 2)
                if seen["scaled"] is not None and seen["no_pod"] is None and not [
                        pod for pod in items(core.list_namespaced_pod(namespace, label_selector=selector,
                                                                      _preload_content=False))
                        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]:
                    seen["no_pod"] = round(time.monotonic() - started, 2)
                if done.is_set() and time.monotonic() - started > 300:
                    return
                time.sleep(0.02)

        started = time.monotonic()
        watcher = threading.Thread(target=watch, args=(started,), daemon=True)
        watcher.start()
        outcome = self.ansible("emergency-stop.yml", size, f"{size}-emergency-stop",
                               ["-e", json.dumps({"emergency_stop_reason": "bench", "emergency_stop_actor": "bench"})])
        done.set()
        watcher.join(timeout=310)
        self.require(outcome, f"emergency-stop of {size} agents")
        # The synthetic workload's positions are above the trading gate's threshold: a throw-away platform overrides it.
        resume = self.ansible("resume.yml", size, f"{size}-resume", ["-e", json.dumps(
            {"resume_validate": False, "agents_gate_override_reason": "bench: a throw-away platform"})])
        self.require(resume, f"resume of {size} agents")
        tasks = outcome["stats"].get("tasks") or []
        first_task = round(tasks[0]["started_monotonic"] - started, 2) if tasks else None

        def after_first(value: float | None) -> float | None:
            return None if value is None or first_task is None else round(value - first_task, 2)

        return {"seconds": outcome["seconds"], "first_task_seconds": first_task,
                "halt_flag_seconds": after_first(seen["halt_flag"]), "scaled_seconds": seen["scaled"],
                "halt_flag_from_start_seconds": seen["halt_flag"], "no_pod_seconds": seen["no_pod"],
                "slowest_tasks": benchlib.slowest_tasks(outcome["stats"]), "resume_seconds": resume["seconds"]}

    def kubectl_apply(self, size: int, ansible_ns: str, kubectl_ns: str) -> dict[str, Any]:
        manifests = WORK_DIR / "manifests" / str(size)
        render = self.ansible("bench/render.yml", size, f"{size}-render",
                              ["-e", json.dumps({"sapphire_namespace": kubectl_ns,
                                                 "bench_manifest_dir": str(manifests)})])
        self.require(render, f"render of {size} agents")
        rendered = [json.loads(path.read_text()) for path in sorted(manifests.glob("0*.json"))]
        names = {(item["kind"], item["metadata"]["name"])
                 for document in rendered for item in document.get("items", [])}
        # The Services the redis and postgres roles point at the host-mode servers: taken from the
        # namespace deploy.yml filled (only what those roles set), since their roles render them inline.
        rc, output = self.run_kubectl(["get", "services", "-n", ansible_ns, "-l",
                                       "app.kubernetes.io/managed-by=sapphire-ops", "-o", "json"],
                                      f"{size}-kubectl", verbose=False)
        if rc != 0:
            raise SystemExit(f"kubectl get services -n {ansible_ns} failed:\n{output}")
        pointers = [pointer_service(item, kubectl_ns) for item in json.loads(output)["items"]
                    if ("Service", item["metadata"]["name"]) not in names]
        (manifests / "02-services.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pointers}))
        objects = benchlib.count_objects(rendered) + len(pointers)
        # One namespace at a time on the cluster: the ansible one goes before kubectl starts.
        self.delete_namespaces([ansible_ns])

        before = self.api_requests()
        started = time.monotonic()
        rc, apply_log = self.run_kubectl(["apply", "--server-side", "--field-manager=sapphire-bench",
                                          "--force-conflicts", "-f", str(manifests)], f"{size}-kubectl")
        if rc != 0:
            raise SystemExit(f"kubectl apply of {manifests} failed:\n{apply_log[-4000:]}")
        wait_log = self.wait_available(kubectl_ns, size)
        seconds = round(time.monotonic() - started, 2)
        after = self.api_requests()
        (manifests / "01-secrets.json").unlink(missing_ok=True)
        return {"seconds": seconds, "objects": objects,
                "kubectl_requests": benchlib.kubectl_requests(apply_log + wait_log),
                "api_requests": benchlib.counter_delta(before, after)["total"],
                "api_requests_by_verb": benchlib.counter_delta(before, after),
                "render_seconds": render["seconds"]}

    def wait_available(self, namespace: str, size: int, timeout: float = 900) -> str:
        """Until every Deployment of the namespace has all its replicas available, with kubectl only."""
        label = f"{size}-kubectl"
        _, text = self.run_kubectl(["wait", "--for=condition=Available", "deployment", "--all", "-n", namespace,
                                    f"--timeout={int(timeout)}s"], label, timeout=int(timeout) + 60)
        deadline = time.monotonic() + timeout
        template = '{range .items[*]}{.metadata.name} {.spec.replicas} {.status.availableReplicas}{"\\n"}{end}'
        while True:
            rc, output = self.run_kubectl(["get", "deployments", "-n", namespace, "-o", f"jsonpath={template}"],
                                          label, verbose=False)
            text += output
            lines = [line.split() for line in output.splitlines() if line.strip()]
            if rc == 0 and lines and all(len(parts) == 3 and parts[1] == parts[2] for parts in lines):
                return text
            if time.monotonic() > deadline:
                raise SystemExit(f"Deployments in {namespace} not available after {timeout} s:\n{output}")
            time.sleep(0.5)

    def delete_namespaces(self, namespaces: list[str]) -> None:
        for namespace in namespaces:
            self.run_kubectl(["delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=600s"],
                             "namespaces", timeout=700, verbose=False)

    def teardown(self) -> None:
        log("teardown: workload, servers, cluster and their state under bench/work/local")
        outcome = self.ansible("bench/teardown.yml", self.sizes[0], "teardown")
        self.require(outcome, "teardown")


def pointer_service(item: dict[str, Any], namespace: str) -> dict[str, Any]:
    """What the role set on a selector-less Service, re-targeted to another namespace."""
    metadata = item["metadata"]
    spec = item.get("spec", {})
    keep_ports = ("name", "port", "targetPort", "protocol")
    ports = [{key: port[key] for key in keep_ports if key in port} for port in spec.get("ports", [])]
    cleaned: dict[str, Any] = {"type": spec.get("type", "ClusterIP"), "ports": ports}
    for key in ("externalName", "selector", "sessionAffinity"):
        if key in spec and not (key == "sessionAffinity" and spec[key] == "None"):
            cleaned[key] = spec[key]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": metadata["name"], "namespace": namespace, "labels": metadata.get("labels", {}),
                         "annotations": {key: value for key, value in metadata.get("annotations", {}).items()
                                         if key.startswith("sapphire.io/")}},
            "spec": cleaned}


def local_agent_tiers() -> dict[str, Any] | None:
    """The tiers every inventory shares (the bench measures the same tiers)."""
    import yaml

    source = REPO_ROOT / "inventories" / "common" / "agent_tiers.yml"
    data = yaml.safe_load(source.read_text()) if source.exists() else None
    return data.get("agent_tiers") if isinstance(data, dict) else None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- the machine and the results -------------------------------------------------------------------


def machine(kubectl: Path) -> dict[str, Any]:
    from ansible.release import __version__ as ansible_core

    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    import ansible_collections.kubernetes.core as k8s_core  # type: ignore[import-not-found]

    manifest = Path(k8s_core.__path__[0]) / "MANIFEST.json"
    collection = json.loads(manifest.read_text())["collection_info"]["version"] if manifest.exists() else "unknown"
    try:
        client = json.loads(subprocess.run([str(kubectl), "version", "--client", "-o", "json"], capture_output=True,
                                           text=True, check=True).stdout)["clientVersion"]["gitVersion"]
    except (OSError, subprocess.CalledProcessError, KeyError, json.JSONDecodeError):
        client = "unknown"
    return {
        "nproc": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "kernel": platform.release(), "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "versions": {"python": platform.python_version(), "ansible_core": ansible_core, "kubernetes_core": collection,
                     "kubectl": client, "kubernetes_release": kube_binary("kubectl").parent.name},
        "note": "shared machine: other contributors' tests and a Kubernetes build may run at the same time",
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["size"] for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for key, label, style in (("deploy", "deploy (ansible)", "o-"), ("redeploy", "no-op re-deploy", "s-"),
                              ("validate", "validate", "^-"), ("kubectl", "kubectl apply --server-side + wait", "d--")):
        axes.plot(sizes, [row[key]["seconds"] for row in rows], style, label=label)
    axes.set_xscale("log")
    axes.set_xticks(sizes, [str(size) for size in sizes])
    axes.set_xlabel("agents in the ensemble")
    axes.set_ylabel("seconds (wall clock)")
    axes.set_title("sapphire-ops: time against ensemble size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sizes takes comma-separated agent counts, e.g. 6,60,300 ({exc})") from exc
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("--sizes needs at least one count >= 1")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES),
                        help="ensemble sizes, comma-separated (default 6,60,300)")
    parser.add_argument("--keep", action="store_true", help="leave the bench cluster and servers running")
    parser.add_argument("--results-dir", type=Path,
                        help="where bench.json and bench.png go (default bench/results for the default sizes, "
                             "bench/work/results otherwise; README.md is updated only for bench/results)")
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: evaluate the targets again, redraw the plot and rewrite the README block "
                             "from an existing bench.json")
    args = parser.parse_args(argv)
    default_run = args.sizes == list(DEFAULT_SIZES)
    results_dir = args.results_dir or (BENCH_DIR / "results" if default_run else WORK_DIR / "results")
    results_dir = results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.from_results:  # the targets are evaluated again from the stored rows (the rules may have changed)
        results = json.loads((results_dir / "bench.json").read_text())
        results["evaluation"] = benchlib.evaluate(results["rows"], results.get("fresh"))
        (results_dir / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
        return publish(results, results_dir)

    bench = Bench(args.sizes, args.keep)
    if not bench.kubectl.exists():
        raise SystemExit(f"kubectl of the pinned release is missing at {bench.kubectl}: "
                         "run `make setup` (tools/kube/build)")
    described = machine(bench.kubectl)
    bench.prepare()
    rows: list[dict[str, Any]] = []
    try:
        fresh = bench.bootstrap()
        for size in args.sizes:
            rows.append(bench.measure(size))
    finally:
        if not args.keep:
            bench.teardown()
    evaluation = benchlib.evaluate(rows, fresh)
    sizes_text = ",".join(map(str, args.sizes))
    results = {
        "command": ".venv/bin/python bench/run.py" + ("" if default_run else " --sizes " + sizes_text),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": described, "fresh": fresh, "rows": rows, "evaluation": evaluation,
        "results_file": relative(results_dir / "bench.json"), "plot_file": relative(results_dir / "bench.png"),
    }
    for row in rows:
        for key in ("deploy", "redeploy", "validate"):
            row[key].pop("log", None)
    (results_dir / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    return publish(results, results_dir)


def publish(results: dict[str, Any], results_dir: Path) -> int:
    """The plot, bench.md, and the README block (only for bench/results) from one results document."""
    plot(results["rows"], results_dir / "bench.png")
    block = benchlib.markdown(results)
    (results_dir / "bench.md").write_text(block + "\n")
    readme = REPO_ROOT / "README.md"
    if results_dir == (BENCH_DIR / "results").resolve() and readme.exists():
        text = readme.read_text()
        try:
            readme.write_text(benchlib.replace_between_markers(text, block))
        except ValueError as exc:
            log(f"README.md not updated: {exc}")
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
