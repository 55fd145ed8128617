"""Runs recorded in the ledger, as MLflow runs: the resolved recipe (flattened) as params, every curve as
per-epoch metrics, the final metrics, and tags for the git commit and dirty flag, the study, its variant
and that variant's verdict.

    export_runs(ledger.runs(), "file:///tmp/mlruns", verdicts={("study-1", "+ema"): "helps"})

One MLflow experiment per study (``dltricks/STUDY``) or per recipe name (``dltricks/NAME``). Each
MLflow run carries the tag ``dltricks.run_id``: a re-export finds it and leaves it as it is (the
same run, the same points), unless the ledger's run has changed since (it finished, say): then the
old MLflow run is deleted and written again. So exporting twice never doubles anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dltricks.errors import DltricksError
from dltricks.ledger.export import flat_params, needs
from dltricks.ledger.record import RunRecord

__all__ = ["ExportCount", "experiment_name", "export_runs"]

RUN_TAG = "dltricks.run_id"
STATE_TAG = "dltricks.state"  # what the export saw: status and finish time; a change re-exports
MAX_PARAM = 500  # MLflow's limit on a param value's length (6000 on newer servers; 500 is safe everywhere)
_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}


@dataclass
class ExportCount:
    written: int = 0
    unchanged: int = 0
    replaced: int = 0


def experiment_name(rec: RunRecord) -> str:
    return f"dltricks/{rec.study}" if rec.study else f"dltricks/{rec.name}"


def _state(rec: RunRecord) -> str:
    return f"{rec.status}@{rec.finished.isoformat() if rec.finished else '-'}"


def _client(uri: str):
    needs("mlflow", "mlflow-skinny")
    import os

    from mlflow.tracking import MlflowClient

    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 refuses its file store unless asked; a file URI given here is that request
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as e:  # noqa: BLE001 - MLflow raises many kinds for a URI it cannot use: one line
        raise DltricksError(f"MLflow cannot use the tracking URI {uri!r}: {e}; e.g. file:///path/mlruns, "
                            "sqlite:///mlflow.db or http://host:5000") from None


def _experiment(client, name: str, cache: dict[str, str]) -> str:
    if name not in cache:
        found = client.get_experiment_by_name(name)
        cache[name] = found.experiment_id if found is not None else client.create_experiment(name)
    return cache[name]


def export_runs(records: Iterable[RunRecord], uri: str, *,
                verdicts: Mapping[tuple[str, str], str] | None = None) -> ExportCount:
    """Write ``records`` to the MLflow tracking server or store at ``uri``; how many were written,
    left unchanged or replaced. ``verdicts[(study, variant)]`` becomes the tag ``dltricks.verdict``."""
    client = _client(uri)
    from mlflow.entities import Metric, Param

    verdicts = verdicts or {}
    count, experiments = ExportCount(), {}
    try:
        for rec in records:
            exp = _experiment(client, experiment_name(rec), experiments)
            old = client.search_runs([exp], filter_string=f"tags.`{RUN_TAG}` = '{rec.id}'")
            if old and old[0].data.tags.get(STATE_TAG) == _state(rec):
                count.unchanged += 1
                continue
            for r in old:
                client.delete_run(r.info.run_id)
            count.replaced += bool(old)
            count.written += not old
            tags = {RUN_TAG: rec.id, STATE_TAG: _state(rec), "mlflow.runName": f"{rec.name}-{rec.id}",
                    "git_commit": rec.git_commit or "", "git_dirty": str(rec.git_dirty).lower(),
                    "seed": str(rec.seed), "device": rec.device, "status": rec.status}
            if rec.study:
                tags["study"] = rec.study
                tags["variant"] = rec.variant or ""
                if (rec.study, rec.variant) in verdicts:
                    tags["dltricks.verdict"] = verdicts[(rec.study, rec.variant)]
            if rec.failure:
                tags["failure"] = rec.failure[:5000]
            start = int(rec.started.timestamp() * 1000)
            run = client.create_run(exp, start_time=start, tags=tags)
            rid = run.info.run_id
            params = [Param(k, v[:MAX_PARAM]) for k, v in sorted(flat_params(rec.recipe).items())]
            metrics = [Metric(k, float(v), start, step) for k, vs in sorted(rec.curves.items())
                       for step, v in enumerate(vs, start=1)]
            last = max((len(v) for v in rec.curves.values()), default=0)
            metrics += [Metric(f"final_{k}" if k in rec.curves else k, float(v), start, last)
                        for k, v in sorted(rec.metrics.items())]
            for i in range(0, len(params), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
                client.log_batch(rid, params=params[i:i + 100])
            for i in range(0, len(metrics), 1000):
                client.log_batch(rid, metrics=metrics[i:i + 1000])
            end = int(rec.finished.timestamp() * 1000) if rec.finished else None
            client.set_terminated(rid, status=_STATUS.get(rec.status, "FINISHED"), end_time=end)
    except DltricksError:
        raise
    except Exception as e:  # noqa: BLE001 - a store that refuses (permissions, a server that is down): one line
        raise DltricksError(f"MLflow export to {uri!r} failed: {type(e).__name__}: {e}") from None
    return count
