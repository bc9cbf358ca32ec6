"""roles/cluster/files/volume_provisioner.py: which local volume to recycle, delete or provision."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
vp = load_module("volume_provisioner", "roles/cluster/files")

CLASS = "standard"
VOLUMES = "/srv/local/clusters/local-primary/volumes"
OURS = {"app.kubernetes.io/managed-by": "sapphire-ops"}


def claim(name: str = "data-redis-0", namespace: str = "ns-a", uid: str = "claim-1", *, size: str = "20Gi",
          phase: str = "Pending", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": CLASS,
                     "resources": {"requests": {"storage": size}}, **spec},
            "status": {"phase": phase}}


def ref(of: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
    meta = of["metadata"]
    return {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"], "name": meta["name"],
            "uid": meta["uid"] if uid is None else uid}


def volume(name: str = "pv-20gi-0", *, size: str = "20Gi", phase: str = "Available",
           claim_ref: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
           annotations: dict[str, str] | None = None, storage_class: str = CLASS,
           path: str | None = None, **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
                            "hostPath": {"path": path or f"{VOLUMES}/{name}", "type": "DirectoryOrCreate"}}
    if claim_ref is not None:
        spec["claimRef"] = claim_ref
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "42",
                         "labels": OURS if labels is None else labels, "annotations": annotations or {}, **meta},
            "spec": spec, "status": {"phase": phase}}


def provisioned(of: dict[str, Any], phase: str = "Bound", uid: str | None = None) -> dict[str, Any]:
    return volume(f"pvc-{of['metadata']['uid']}", size=of["spec"]["resources"]["requests"]["storage"],
                  phase=phase, claim_ref=ref(of, uid), annotations={vp.PROVISIONED_BY: vp.PROVISIONER})


def plan(volumes: list[dict[str, Any]], claims: list[dict[str, Any]]) -> list[Any]:
    return vp.plan(volumes, claims, storage_class=CLASS, volumes_dir=VOLUMES)


def summary(actions: list[Any]) -> list[tuple[str, str]]:
    return [(action.kind, action.volume) for action in actions]


@pytest.mark.parametrize(("text", "expected"), [
    ("20Gi", Decimal(20 * 2**30)), ("100Gi", Decimal(100 * 2**30)), ("512Mi", Decimal(512 * 2**20)),
    ("1G", Decimal(10**9)), ("1.5Gi", Decimal("1.5") * 2**30), ("1e3", Decimal(1000)), ("2k", Decimal(2000)),
    ("100", Decimal(100)), ("500m", Decimal("0.5")), (20, Decimal(20)),
    ("", None), ("lots", None), ("20GB", None), ("-1Gi", None),
])
def test_quantities_parse_like_kubernetes(text: Any, expected: Decimal | None) -> None:
    assert vp.parse_quantity(text) == expected


# ---------------------------------------------------------------- recycling and deleting


def test_released_pool_volume_whose_namespace_is_gone_is_recycled_with_preconditions() -> None:
    gone = claim(phase="Bound")
    actions = plan([volume(phase="Released", claim_ref=ref(gone))], [])
    assert summary(actions) == [("recycle", "pv-20gi-0")]
    action = actions[0]
    assert action.preconditions == {"resourceVersion": "42", "uid": "uid-pv-20gi-0", "claimUid": "claim-1"}
    assert action.scrub == f"{VOLUMES}/pv-20gi-0"
    assert "ns-a/data-redis-0 is gone" in action.reason


def test_released_volume_whose_claim_still_exists_is_never_touched() -> None:
    still_there = claim(phase="Lost")
    assert plan([volume(phase="Released", claim_ref=ref(still_there))], [still_there]) == []


@pytest.mark.parametrize("phase", ["Bound", "Available", "Pending", "Failed", ""])
def test_a_volume_that_is_not_released_is_never_touched_even_when_its_claim_is_missing(phase: str) -> None:
    gone = claim()
    assert plan([volume(phase=phase, claim_ref=ref(gone))], []) == []
    assert plan([provisioned(gone, phase=phase)], []) == []


def test_a_claim_recreated_under_the_old_name_is_another_claim() -> None:
    old, new = claim(uid="old-uid", phase="Bound"), claim(uid="new-uid", phase="Bound")
    actions = plan([volume(phase="Released", claim_ref=ref(old)),
                    volume("pv-20gi-1", phase="Bound", claim_ref=ref(new))], [new])
    assert summary(actions) == [("recycle", "pv-20gi-0")]


def test_a_claim_ref_without_uid_counts_as_existing_while_a_claim_of_that_name_exists() -> None:
    any_claim = claim(uid="whatever", phase="Bound")
    pv = volume(phase="Released", claim_ref=ref(any_claim, uid=""))
    assert plan([pv], [any_claim]) == []
    assert summary(plan([pv], [])) == [("recycle", "pv-20gi-0")]


def test_same_name_in_another_namespace_does_not_keep_a_volume() -> None:
    gone, elsewhere = claim(namespace="ns-a", uid="u1"), claim(namespace="ns-b", uid="u1", phase="Bound")
    assert summary(plan([volume(phase="Released", claim_ref=ref(gone))], [elsewhere])) == [("recycle", "pv-20gi-0")]


def test_provisioned_volume_whose_claim_is_gone_is_deleted() -> None:
    gone = claim(uid="abc")
    actions = plan([provisioned(gone, phase="Released")], [])
    assert summary(actions) == [("delete", "pvc-abc")]
    assert actions[0].preconditions == {"resourceVersion": "42", "uid": "uid-pvc-abc"}
    assert actions[0].scrub == f"{VOLUMES}/pvc-abc"


@pytest.mark.parametrize("pv", [
    volume(phase="Released", claim_ref=ref(claim()), labels={}),
    volume(phase="Released", claim_ref=ref(claim()), labels={"app.kubernetes.io/managed-by": "someone-else"}),
    volume(phase="Released", claim_ref=ref(claim()), storage_class="fast-ssd"),
    volume(phase="Released", claim_ref=ref(claim()), deletionTimestamp="2026-11-01T00:00:00Z"),
    volume(phase="Released"),
], ids=["unlabelled", "other-manager", "other-class", "being-deleted", "no-claim-ref"])
def test_volumes_that_are_not_ours_to_reclaim_are_left_alone(pv: dict[str, Any]) -> None:
    assert plan([pv], []) == []


def test_only_the_volumes_own_directory_is_scrubbed() -> None:
    gone = claim()
    elsewhere = volume(phase="Released", claim_ref=ref(gone), path="/var/lib/important")
    sneaky = volume(phase="Released", claim_ref=ref(gone), path=f"{VOLUMES}/pv-20gi-0/../../../etc")
    assert plan([elsewhere], [])[0].scrub is None
    assert plan([sneaky], [])[0].scrub is None


# ---------------------------------------------------------------- provisioning


def test_pending_claim_that_no_available_volume_fits_gets_a_prebound_volume_of_its_size() -> None:
    pending = claim("data-postgres-0", "ns-b", "c-9", size="100Gi")
    actions = plan([volume(size="20Gi"), volume("pv-100gi-0", size="100Gi", phase="Bound",
                                                claim_ref=ref(claim(uid="x", phase="Bound")))], [pending])
    assert summary(actions) == [("provision", "pvc-c-9")]
    manifest = actions[0].manifest
    assert manifest["metadata"]["annotations"] == {vp.PROVISIONED_BY: vp.PROVISIONER}
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sapphire-ops"
    spec = manifest["spec"]
    assert spec["capacity"] == {"storage": "100Gi"}
    assert spec["storageClassName"] == CLASS and spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["accessModes"] == ["ReadWriteOnce"] and spec["volumeMode"] == "Filesystem"
    assert spec["hostPath"] == {"path": f"{VOLUMES}/pvc-c-9", "type": "DirectoryOrCreate"}
    assert spec["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns-b",
                                "name": "data-postgres-0", "uid": "c-9"}
    # the volume it makes is the one plan() later deletes once the claim is gone
    made = {**manifest, "metadata": {**manifest["metadata"], "uid": "u", "resourceVersion": "7"},
            "status": {"phase": "Released"}}
    assert summary(plan([made], [])) == [("delete", "pvc-c-9")]


@pytest.mark.parametrize("pv", [
    volume(size="20Gi"), volume(size="50Gi"), volume(size="21474836480"),
], ids=["same-size", "larger", "same-size-in-bytes"])
def test_pending_claim_that_an_available_volume_fits_is_left_to_the_pv_binder(pv: dict[str, Any]) -> None:
    assert plan([pv], [claim(size="20Gi")]) == []


def test_a_claim_with_a_volume_prebound_to_it_gets_no_second_one() -> None:
    pending = claim()
    assert plan([provisioned(pending, phase="Available")], [pending]) == []
    by_hand = volume("pv-by-hand", phase="Available", claim_ref=ref(pending, uid=""), labels={})
    assert plan([by_hand], [pending]) == []
    for_the_old_claim = provisioned(claim(uid="old"), phase="Released")  # same namespace and name, older claim
    assert summary(plan([for_the_old_claim], [pending])) == [("delete", "pvc-old"), ("provision", "pvc-claim-1")]


@pytest.mark.parametrize("pv", [
    volume(size="10Gi"),
    volume(phase="Bound", claim_ref=ref(claim(uid="other", phase="Bound"))),
    volume(phase="Released", claim_ref=ref(claim(uid="gone"))),
    volume(storage_class="fast-ssd"),
    volume(phase="Available", deletionTimestamp="2026-11-01T00:00:00Z"),
], ids=["too-small", "bound-to-another", "released", "other-class", "being-deleted"])
def test_volumes_that_cannot_take_the_claim_do_not_count_as_fits(pv: dict[str, Any]) -> None:
    pending = claim()
    assert ("provision", "pvc-claim-1") in summary(plan([pv], [pending]))


def test_access_and_volume_modes_must_fit() -> None:
    rwx = claim(accessModes=["ReadWriteMany"])
    block = claim(uid="claim-2", volumeMode="Block")
    actions = plan([volume()], [rwx, block])
    assert summary(actions) == [("provision", "pvc-claim-1"), ("provision", "pvc-claim-2")]
    assert actions[0].manifest["spec"]["accessModes"] == ["ReadWriteMany"]
    assert actions[1].manifest["spec"]["volumeMode"] == "Block"


@pytest.mark.parametrize("pending", [
    claim(phase="Bound"),
    claim(storageClassName="fast-ssd"),
    claim(storageClassName=""),
    claim(volumeName="pv-20gi-3"),
    claim(selector={"matchLabels": {"sapphire.io/size": "20Gi"}}),
    claim(dataSource={"kind": "PersistentVolumeClaim", "name": "source"}),
    claim(size="lots"),
    claim(size="0"),
    claim(uid=""),
], ids=["bound", "other-class", "no-class", "named-volume", "selector", "data-source", "bad-size", "zero",
        "no-uid"])
def test_claims_a_provisioner_does_not_serve_get_nothing(pending: dict[str, Any]) -> None:
    assert plan([], [pending]) == []


def test_a_claim_being_deleted_gets_nothing() -> None:
    pending = claim()
    pending["metadata"]["deletionTimestamp"] = "2026-11-01T00:00:00Z"
    assert plan([], [pending]) == []


def test_a_volume_recycled_in_this_pass_does_not_hold_back_a_pending_claim() -> None:
    """The PV binder retries Pending claims only on its resync: the claim gets its own volume now."""
    gone, pending = claim("data-redis-0", "old-ns", "old"), claim("data-redis-0", "new-ns", "new")
    actions = plan([volume(phase="Released", claim_ref=ref(gone))], [pending])
    assert summary(actions) == [("recycle", "pv-20gi-0"), ("provision", "pvc-new")]


def test_more_cycles_than_the_pool_has_volumes_keep_every_claim_served() -> None:
    """A pool of two, five namespaces one after another: each claim is bound or gets a volume."""
    pool = [volume("pv-20gi-0"), volume("pv-20gi-1")]
    for cycle in range(5):
        pending = claim(namespace=f"ns-{cycle}", uid=f"c{cycle}")
        actions = plan(pool, [pending])
        free = [pv for pv in pool if pv["status"]["phase"] == "Available" and "claimRef" not in pv["spec"]]
        if free:  # the PV binder takes it
            assert actions == []
            free[0]["spec"]["claimRef"], free[0]["status"]["phase"] = ref(pending), "Bound"
        else:
            assert summary(actions) == [("provision", f"pvc-c{cycle}")]
            made = actions[0].manifest
            made["metadata"].update(uid=f"u{cycle}", resourceVersion="1")
            pool.append({**made, "status": {"phase": "Bound"}})
        # the namespace is deleted: the binder marks the volume Released; the next pass reclaims it
        for pv in pool:
            if pv["spec"].get("claimRef", {}).get("uid") == f"c{cycle}":
                pv["status"]["phase"] = "Released"
        for action in plan(pool, []):
            pv = next(p for p in pool if p["metadata"]["name"] == action.volume)
            if action.kind == "recycle":
                del pv["spec"]["claimRef"]
                pv["status"]["phase"] = "Available"
            else:
                assert action.kind == "delete"
                pool.remove(pv)
    assert sorted(pv["metadata"]["name"] for pv in pool) == ["pv-20gi-0", "pv-20gi-1"]
    assert all(pv["status"]["phase"] == "Available" for pv in pool)


# ---------------------------------------------------------------- carrying the actions out


class FakeApi:
    def __init__(self, volumes: list[dict[str, Any]], claims: list[dict[str, Any]],
                 fail: dict[str, int] | None = None) -> None:
        self.volumes, self.claims, self.fail, self.calls = volumes, claims, fail or {}, []

    def items(self, path: str) -> list[dict[str, Any]]:
        self.calls.append(("GET", path, None))
        return self.volumes if path.endswith("persistentvolumes") else self.claims

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        self.calls.append((method, path, body))
        if method in self.fail:
            raise vp.ApiError(self.fail[method], "the object has been modified")
        return {}


def test_a_pass_lists_volumes_before_claims_and_acts_with_preconditions(tmp_path: Path) -> None:
    directory = tmp_path / "pv-20gi-0"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "old-rows").write_text("from the deleted namespace")
    gone, gone_too, pending = claim(uid="g1"), claim(uid="g2"), claim(namespace="ns-new", uid="p1", size="100Gi")
    pool_pv = volume(phase="Released", claim_ref=ref(gone), path=str(directory))
    made_pv = provisioned(gone_too, phase="Released")
    api = FakeApi([pool_pv, made_pv], [pending])
    lines = vp.run_pass(api, CLASS, str(tmp_path))
    assert [call[1] for call in api.calls[:2]] == ["/api/v1/persistentvolumes", "/api/v1/persistentvolumeclaims"]
    method, path, body = api.calls[2]
    assert (method, path.split("?")[0]) == ("PATCH", "/api/v1/persistentvolumes/pv-20gi-0")
    assert body == [{"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                    {"op": "test", "path": "/spec/claimRef/uid", "value": "g1"},
                    {"op": "remove", "path": "/spec/claimRef"}]
    assert not directory.exists(), "the recycled volume's data must not reach the next claim"
    method, path, body = api.calls[3]
    assert (method, path) == ("DELETE", "/api/v1/persistentvolumes/pvc-g2")
    assert body["preconditions"] == {"uid": "uid-pvc-g2", "resourceVersion": "42"}
    method, path, body = api.calls[4]
    assert (method, path.split("?")[0], body["metadata"]["name"]) == ("POST", "/api/v1/persistentvolumes", "pvc-p1")
    assert [line.split(":")[0] for line in lines] == ["recycle pv-20gi-0", "delete pvc-g2", "provision pvc-p1"]


@pytest.mark.parametrize("status", [404, 409, 422])
def test_a_volume_that_changed_since_it_was_listed_is_skipped_not_fatal(status: int) -> None:
    api = FakeApi([volume(phase="Released", claim_ref=ref(claim()))], [], fail={"PATCH": status})
    assert vp.run_pass(api, CLASS, VOLUMES)[0].startswith("skip recycle pv-20gi-0")


def test_other_api_errors_fail_the_pass() -> None:
    api = FakeApi([volume(phase="Released", claim_ref=ref(claim()))], [], fail={"PATCH": 403})
    with pytest.raises(vp.ApiError):
        vp.run_pass(api, CLASS, VOLUMES)


def test_the_process_stops_when_the_cluster_state_is_removed(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "pki" / "ca.crt")
    assert vp.main(["--server", "https://127.0.0.1:1", "--ca-file", missing, "--cert-file", missing,
                    "--key-file", missing, "--storage-class", CLASS, "--volumes-dir", VOLUMES]) == 0
    assert "the cluster was removed" in capsys.readouterr().out
