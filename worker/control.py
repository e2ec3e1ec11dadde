"""Small admin jobs on the shared models folder: list, promote, rollback, stats."""

from __future__ import annotations

import contract
from model import registry
from worker import stats
from worker.settings import WorkerSettings


def _describe(info: registry.VersionInfo) -> contract.ModelVersion:
    record = info.record
    metrics = record.get("metrics", {})
    return contract.ModelVersion(
        version=info.version,
        active=info.active,
        created_at=record.get("created_at"),
        created_by=record.get("created_by"),
        dataset=record.get("dataset", {}).get("name") if info.path else record.get("name"),
        test_accuracy=metrics.get("test_accuracy"),
        classes=len(metrics["labels"]) if "labels" in metrics else None,
        note=("passed the gate" if record["gate"]["passed"] else "failed the gate")
        if "gate" in record
        else "",
    )


def list_models(settings: WorkerSettings) -> list[contract.ModelVersion]:
    """Every stored version plus version 0, oldest first."""
    return [_describe(info) for info in registry.list_versions(settings.models_root)]


def promote(request: contract.PromoteRequest, settings: WorkerSettings) -> contract.SwitchResult:
    """Make a version active (workers pick it up within seconds); Refused if there is none."""
    try:
        previous = registry.promote(settings.models_root, request.version, request.requested_by)
    except registry.RegistryError as exc:
        raise contract.Refused(str(exc), exc.code, exc.params) from exc
    return contract.SwitchResult(request.version, previous)


def rollback(request: contract.RollbackRequest, settings: WorkerSettings) -> contract.SwitchResult:
    """Return to the previously active version; Refused if there is none."""
    root = settings.models_root
    previous = registry.active_version(root)
    try:
        return contract.SwitchResult(registry.rollback(root, request.requested_by), previous)
    except registry.RegistryError as exc:
        raise contract.Refused(str(exc), exc.code, exc.params) from exc


def today(settings: WorkerSettings) -> contract.Stats:
    """Today's classify jobs, their mean latency and the active version."""
    jobs, latency, errors = stats.today(settings.broker_url())
    avg = round(latency, 1) if latency is not None else None
    return contract.Stats(registry.active_version(settings.models_root), jobs, avg, errors)
