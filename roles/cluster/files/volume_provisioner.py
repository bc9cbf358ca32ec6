#!/usr/bin/env python3
"""Volume provisioner of the local default's kwok clusters (started by the cluster role).

A local cluster has no storage provisioner: its default StorageClass is
`kubernetes.io/no-provisioner` with a fixed pool of hostPath PersistentVolumes, reclaim policy
Retain. Once the claim of such a volume is deleted (its namespace removed by a cleanup, a test or
a second ensemble) the volume stays `Released` for good, and after a few cycles nothing binds.
This process stands in for the provisioner a real cluster has. Every few seconds it lists the
volumes, then the claims, and acts on what `plan()` decides:

- recycle: a pool volume (label app.kubernetes.io/managed-by=sapphire-ops) that is `Released`
  and whose claim is gone (no claim with the claimRef's namespace, name and UID) is scrubbed and
  its claimRef cleared, so it is `Available` again;
- delete: a volume this process provisioned, `Released`, whose claim is gone, is deleted (and its
  directory removed): it was made for that one claim;
- provision: a `Pending` claim of the local StorageClass that no `Available` volume can satisfy
  gets a new volume of its size, pre-bound to it (claimRef with the claim's UID), as a dynamic
  provisioner does.

A volume that is `Bound`, or whose claim still exists, is never touched; every change carries a
precondition (resourceVersion, UID) so a volume that changed since it was listed is left for the
next pass. Only the Python standard library is used, so any python3 runs it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

PROVISIONER = "sapphire.io/local-volume-provisioner"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "sapphire-ops"
FIELD_MANAGER = "sapphire-volume-provisioner"

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}

Object = Mapping[str, Any]


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity ("20Gi", "500M", "1e3") as a number, or None when it is not one."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        result = Decimal(number) * _SUFFIXES[suffix or ""]
        return result * (Decimal(10) ** int(exponent)) if exponent else result
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class Action:
    """One change to make. `volume` names the PersistentVolume; `preconditions` must still hold."""

    kind: Literal["recycle", "delete", "provision"]
    volume: str
    reason: str
    preconditions: dict[str, str] = field(default_factory=dict)
    scrub: str | None = None
    manifest: dict[str, Any] | None = None


def _meta(obj: Object) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Object) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _phase(obj: Object) -> str:
    return (obj.get("status") or {}).get("phase") or ""


def _claim_key(claim: Object) -> str:
    return f"{_meta(claim).get('namespace')}/{_meta(claim).get('name')}"


def claim_exists(claim_ref: Mapping[str, Any], claims: Iterable[Object]) -> bool:
    """Whether the claim a volume's claimRef names still exists.

    Same namespace and name, and the same UID when the claimRef records one: a claim re-created
    under the old name (a namespace deleted and made again) is another claim. A claimRef without
    UID (pre-bound by hand) counts as existing while any claim of that name does.
    """
    uid = claim_ref.get("uid") or ""
    for claim in claims:
        meta = _meta(claim)
        if meta.get("namespace") == claim_ref.get("namespace") and meta.get("name") == claim_ref.get("name"):
            if not uid or meta.get("uid") == uid:
                return True
    return False


def is_provisioned(volume: Object) -> bool:
    """A volume this provisioner created (annotation pv.kubernetes.io/provisioned-by)."""
    return (_meta(volume).get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER


def is_ours(volume: Object, storage_class: str) -> bool:
    """A volume of the local StorageClass that sapphire-ops made (the pool or this provisioner)."""
    labels = _meta(volume).get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGER and _spec(volume).get("storageClassName") == storage_class


def volume_dir(volume: Object, volumes_dir: str) -> str | None:
    """The volume's hostPath directory when it is the one this cluster gives it (<volumes_dir>/<name>)."""
    name = _meta(volume).get("name") or ""
    expected = str(Path(volumes_dir) / name)
    path = (_spec(volume).get("hostPath") or {}).get("path")
    return expected if name and "/" not in name and path == expected else None


def reclaim_action(volume: Object, claims: Sequence[Object], *, storage_class: str,
                   volumes_dir: str) -> Action | None:
    """What to do with one volume: recycle or delete it when it is ours, Released and its claim gone."""
    meta, claim_ref = _meta(volume), _spec(volume).get("claimRef")
    if not is_ours(volume, storage_class) or meta.get("deletionTimestamp"):
        return None
    if _phase(volume) != "Released" or not claim_ref or claim_exists(claim_ref, claims):
        return None
    gone = f"{claim_ref.get('namespace')}/{claim_ref.get('name')}"
    preconditions = {"resourceVersion": str(meta.get("resourceVersion") or ""), "uid": str(meta.get("uid") or "")}
    if is_provisioned(volume):
        return Action("delete", meta["name"], f"its claim {gone} is gone", preconditions,
                      scrub=volume_dir(volume, volumes_dir))
    preconditions["claimUid"] = str(claim_ref.get("uid") or "")
    return Action("recycle", meta["name"], f"its claim {gone} is gone", preconditions,
                  scrub=volume_dir(volume, volumes_dir))


def _requested(claim: Object) -> Decimal | None:
    requests = (_spec(claim).get("resources") or {}).get("requests") or {}
    size = parse_quantity(requests.get("storage", ""))
    return size if size is not None and size > 0 else None


def _volume_mode(obj: Object) -> str:
    return _spec(obj).get("volumeMode") or "Filesystem"


def _access_modes(claim: Object) -> list[str]:
    return list(_spec(claim).get("accessModes") or ["ReadWriteOnce"])


def prebound(volume: Object, claim: Object) -> bool:
    """Whether the volume's claimRef names this claim (and its UID, when it records one), as the PV
    binder reads it: such a volume is bound to the claim, no other is needed."""
    claim_ref, meta = _spec(volume).get("claimRef") or {}, _meta(claim)
    return ((claim_ref.get("namespace"), claim_ref.get("name")) == (meta.get("namespace"), meta.get("name"))
            and claim_ref.get("uid") in ("", None, meta.get("uid")))


def volume_fits(volume: Object, claim: Object) -> bool:
    """Whether the PV binder could bind this unclaimed, Available volume to the claim."""
    spec = _spec(volume)
    if spec.get("claimRef") or _phase(volume) != "Available" or _meta(volume).get("deletionTimestamp"):
        return False
    capacity = parse_quantity((spec.get("capacity") or {}).get("storage", ""))
    requested = _requested(claim)
    return (spec.get("storageClassName") == _spec(claim).get("storageClassName")
            and capacity is not None and requested is not None and capacity >= requested
            and set(_access_modes(claim)) <= set(spec.get("accessModes") or [])
            and _volume_mode(volume) == _volume_mode(claim))


def wants_volume(claim: Object, storage_class: str) -> bool:
    """A claim a dynamic provisioner of the local StorageClass would serve: Pending, of the class,
    not asking for a named volume, a label selector or a data source (those a provisioner refuses)."""
    spec, meta = _spec(claim), _meta(claim)
    return (_phase(claim) in ("", "Pending") and not meta.get("deletionTimestamp")
            and spec.get("storageClassName") == storage_class and not spec.get("volumeName")
            and not spec.get("selector") and not spec.get("dataSource") and not spec.get("dataSourceRef")
            and bool(meta.get("uid")) and _requested(claim) is not None)


def volume_for(claim: Object, *, storage_class: str, volumes_dir: str) -> dict[str, Any]:
    """The PersistentVolume provisioned for a claim: its size, access and volume modes, pre-bound to it."""
    meta, spec = _meta(claim), _spec(claim)
    name = f"pvc-{meta['uid']}"
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name,
                     "labels": {MANAGED_BY: MANAGER, "app.kubernetes.io/part-of": "sapphire",
                                "app.kubernetes.io/component": "volume-provisioner"},
                     "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {"capacity": {"storage": str(spec["resources"]["requests"]["storage"])},
                 "accessModes": _access_modes(claim), "volumeMode": _volume_mode(claim),
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
                 "hostPath": {"path": str(Path(volumes_dir) / name), "type": "DirectoryOrCreate"},
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                              "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}},
    }


def plan(volumes: Sequence[Object], claims: Sequence[Object], *, storage_class: str,
         volumes_dir: str) -> list[Action]:
    """Every change one pass makes, from the volumes and the claims listed after them.

    Listing the volumes first matters: a claim a volume's claimRef names either shows in the later
    claim list or was deleted in between, so "not in the list" means gone (UIDs are never reused).
    A volume recycled in this pass is not counted as Available yet: the PV binder retries Pending
    claims only on its periodic resync, so the claim gets a volume of its own now instead.
    """
    actions = [action for volume in volumes
               if (action := reclaim_action(volume, claims, storage_class=storage_class,
                                            volumes_dir=volumes_dir)) is not None]
    for claim in claims:
        if not wants_volume(claim, storage_class):
            continue
        if any(prebound(volume, claim) or volume_fits(volume, claim) for volume in volumes):
            continue  # a volume is on its way (provisioned in an earlier pass), or the PV binder binds it
        manifest = volume_for(claim, storage_class=storage_class, volumes_dir=volumes_dir)
        actions.append(Action("provision", manifest["metadata"]["name"],
                              f"claim {_claim_key(claim)} is Pending and no Available volume fits",
                              manifest=manifest))
    return actions


# ---------------------------------------------------------------- the API and the loop


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass
class Api:
    """A minimal client of the kube-apiserver over one kept-alive TLS connection (client certificate)."""

    server: str
    ca_file: str
    cert_file: str
    key_file: str
    timeout: float = 30.0
    _connection: http.client.HTTPSConnection | None = None

    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.load_cert_chain(self.cert_file, self.key_file)
            url = urlsplit(self.server)
            self._connection = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port or 443,
                                                           context=context, timeout=self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json", "User-Agent": FIELD_MANAGER}
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = content_type
        try:
            connection = self._connect()
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()  # reconnect next time, re-reading the certificates (a re-issued PKI)
            raise
        result = json.loads(data or b"{}")
        if response.status >= 400:
            raise ApiError(response.status, result.get("message", data[:200].decode(errors="replace")))
        return result

    def items(self, path: str) -> list[dict[str, Any]]:
        return list(self.request("GET", path).get("items") or [])


def scrub(path: str | None) -> None:
    """Empty a volume's directory before it serves another claim (as a real provisioner cleans)."""
    if path and Path(path).is_dir():
        shutil.rmtree(path)


def execute(api: Api, action: Action) -> None:
    """Make one planned change; a volume that changed since it was listed fails its precondition."""
    pv_path = f"/api/v1/persistentvolumes/{action.volume}?fieldManager={FIELD_MANAGER}"
    if action.kind == "provision":
        api.request("POST", f"/api/v1/persistentvolumes?fieldManager={FIELD_MANAGER}", action.manifest)
        return
    scrub(action.scrub)
    if action.kind == "recycle":
        api.request("PATCH", pv_path, [
            {"op": "test", "path": "/metadata/resourceVersion", "value": action.preconditions["resourceVersion"]},
            {"op": "test", "path": "/spec/claimRef/uid", "value": action.preconditions["claimUid"]},
            {"op": "remove", "path": "/spec/claimRef"},
        ], content_type="application/json-patch+json")
    elif action.kind == "delete":
        api.request("DELETE", f"/api/v1/persistentvolumes/{action.volume}", {
            "apiVersion": "v1", "kind": "DeleteOptions",
            "preconditions": {"uid": action.preconditions["uid"],
                              "resourceVersion": action.preconditions["resourceVersion"]}})


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}", flush=True)


def run_pass(api: Api, storage_class: str, volumes_dir: str) -> list[str]:
    """One pass: list, plan, act. Returns a line per change (made or refused by a precondition)."""
    volumes = api.items("/api/v1/persistentvolumes")
    claims = api.items("/api/v1/persistentvolumeclaims")
    lines = []
    for action in plan(volumes, claims, storage_class=storage_class, volumes_dir=volumes_dir):
        try:
            execute(api, action)
            lines.append(f"{action.kind} {action.volume}: {action.reason}")
        except ApiError as exc:
            if exc.status not in (404, 409, 422):
                raise
            lines.append(f"skip {action.kind} {action.volume}: it changed since it was listed ({exc})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="API server URL, e.g. https://127.0.0.1:20443")
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--storage-class", required=True, help="the local StorageClass to provision for")
    parser.add_argument("--volumes-dir", required=True, help="directory of the volumes' hostPath directories")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api = Api(args.server, args.ca_file, args.cert_file, args.key_file)
    log(f"volume provisioner for StorageClass {args.storage_class} on {args.server} started")
    last_error = ""
    while not stop.is_set():
        if not Path(args.ca_file).exists():
            log(f"{args.ca_file} is gone (the cluster was removed); stopping")
            return 0
        try:
            for line in run_pass(api, args.storage_class, args.volumes_dir):
                log(line)
            if last_error:
                log("the API server answers again")
            last_error = ""
        except (OSError, http.client.HTTPException, ApiError, ValueError) as exc:
            if str(exc) != last_error:  # once per distinct error, not every pass while the API is down
                log(f"pass failed, retrying every {args.interval:g} s: {exc}")
            last_error = str(exc)
        stop.wait(args.interval)
    api.close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
