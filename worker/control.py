"""Small admin jobs on the shared registry: list, promote, rollback, stats."""

from __future__ import annotations

import contract
from store.blobs import StoreError
from store.registry import ZERO_SHOT, RegistryError, VersionInfo
from worker import hosts, stats, storage, versions
from worker.settings import WorkerSettings


def _describe(info: VersionInfo, serving: list[contract.HostStatus]) -> contract.ModelVersion:
    record = info.record
    metrics = record.get("metrics", {})
    return contract.ModelVersion(
        version=info.version,
        active=info.active,
        created_at=record.get("created_at"),
        created_by=record.get("created_by"),
        dataset=record.get("dataset", {}).get("name")
        if info.version != ZERO_SHOT
        else record.get("name"),
        test_accuracy=metrics.get("test_accuracy"),
        classes=len(metrics["labels"]) if "labels" in metrics else None,
        accuracy_source=metrics.get("accuracy_source"),
        note=("passed the gate" if record["gate"]["passed"] else "failed the gate")
        if "gate" in record
        else "",
        hosts=[status.to_dict() for status in serving if status.version == info.version],
    )


def _refused(exc: RegistryError | StoreError | versions.BadRecord) -> contract.Refused:
    if isinstance(exc, StoreError | versions.BadRecord):
        return versions.refusal(exc)
    return contract.Refused(str(exc), exc.code, exc.params)


def list_models(settings: WorkerSettings) -> list[contract.ModelVersion]:
    """Every stored version plus version 0, oldest first, each with the hosts serving it."""
    reg = storage.registry(settings)
    serving = hosts.read_all(reg.client)
    return [_describe(info, serving) for info in reg.list_versions()]


def promote(request: contract.PromoteRequest, settings: WorkerSettings) -> contract.SwitchResult:
    """Make a version active (every worker serves it within seconds); Refused if there is none,
    or if its files cannot be fetched whole from the store (the active one then stays)."""
    reg = storage.registry(settings)
    try:
        versions.verify(reg.record(request.version), reg.store)
        previous = reg.promote(request.version, request.requested_by)
    except (RegistryError, StoreError, versions.BadRecord) as exc:
        raise _refused(exc) from exc
    return contract.SwitchResult(request.version, previous)


def rollback(request: contract.RollbackRequest, settings: WorkerSettings) -> contract.SwitchResult:
    """Return to the previously active version; Refused if there is none, or if its files cannot
    be fetched whole from the store (the active one then stays)."""
    reg = storage.registry(settings)
    previous = reg.active_version()
    try:
        back = reg.rollback(
            request.requested_by, check=lambda v: versions.verify(reg.record(v), reg.store)
        )
    except (RegistryError, StoreError, versions.BadRecord) as exc:
        raise _refused(exc) from exc
    return contract.SwitchResult(back, previous)


def today(settings: WorkerSettings) -> contract.Stats:
    """Today's classify jobs, their mean latency and the active version."""
    jobs, latency, errors = stats.today(settings.broker_url())
    avg = round(latency, 1) if latency is not None else None
    return contract.Stats(storage.registry(settings).active_version(), jobs, avg, errors)
