"""Compression variants of a finished run, each a new ledger run linked to its source, measured side by side.

    result = compress_run(ledger, "3f2a9c", [CompressSpec(quantize="dynamic"), CompressSpec(prune=0.5)])
    result.rows        # one per variant and the source: size, latency at batch 1 and 64, test metrics
    result.report      # {"html": ..., "csv": ..., "md": ..., "pareto": ...}

A variant's run has the source's recipe with its ``[compress]`` section filled in (``compress.source``
names the source run), study ``compress-<source id>`` and the variant's label; its folder holds the
compressed ``model.safetensors`` and ``compressed.json`` (see :mod:`dltricks.compress.store`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from dltricks.compress import measure
from dltricks.compress.pipeline import compress_model, label
from dltricks.compress.prune import sparsity
from dltricks.compress.store import load_compressed, save_compressed
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.loop.from_run import completed_run
from dltricks.methods.build import make_task, model_from_run
from dltricks.recipe import CompressSpec, Recipe

__all__ = ["CompressResult", "compress_run", "compress_trained", "compressed_model", "variant_specs"]


@dataclass
class CompressResult:
    source: str
    rows: list[dict[str, Any]]
    failures: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)


def compressed_model(ledger: Ledger, run_id: str) -> nn.Module:
    """The compressed model of a variant run, rebuilt from its folder."""
    rec = completed_run(ledger, run_id, why="a compressed model is loaded")
    return load_compressed(Path(rec.checkpoint).parent)[0]


def _spec_patch(spec: CompressSpec) -> dict[str, Any]:
    return {f"compress.{k}": v for k, v in spec.model_dump(mode="json").items()}


def compress_run(ledger: Ledger, run_id: str, specs: list[CompressSpec], *, progress: bool = True,
                 out: str | Path | None = None, rounds: int = 5, threads: int = 1) -> CompressResult:
    """Compress the completed run ``run_id`` once per spec; record every variant; write the report."""
    from dltricks.compress.report import write_report

    if not specs:
        raise DltricksError("nothing to compress: give --quantize and/or --prune (see `dltricks compress --help`)")
    rec = completed_run(ledger, run_id, why="it is compressed")
    if (rec.recipe.get("compress") or {}).get("source") or (Path(rec.checkpoint).parent / "compressed.json").exists():
        raise DltricksError(f"run {rec.id} is already a compressed model; compress the run it came from")
    recipe, bundle, source_model = model_from_run(ledger, rec.id, why="it is compressed")
    task = make_task(recipe, bundle)
    base_correct = measure.correct_per_sample(source_model, bundle.test)
    models: dict[str, nn.Module] = {"source": source_model}
    rows: dict[str, dict[str, Any]] = {"source": {
        "variant": "source", "run": rec.id, "size_bytes": measure.size_bytes(rec.checkpoint),
        **measure.test_metrics(source_model, bundle, task)}}
    failures, started = [], []
    for spec in specs:
        spec = spec.model_copy(update={"source": rec.id})
        name = label(spec)
        vrecipe = recipe.patch(_spec_patch(spec))
        vid = ledger.start_run(name=f"{rec.name}:{name}", recipe=vrecipe, seed=recipe.seed, device="cpu",
                               study=f"compress-{rec.id}", variant=name)
        try:
            model, desc, curves = compress_model(copy.deepcopy(source_model), recipe, bundle, task, spec,
                                                 progress=progress)
            weights = save_compressed(ledger.run_dir(vid), model, desc)
        except DltricksError as e:
            ledger.finish(vid, "failed", failure=str(e))
            if len(specs) == 1:
                raise
            failures.append({"variant": name, "run": vid, "reason": str(e)})
            continue
        except Exception as e:  # a library crash: recorded on the run, reported, the other variants go on
            ledger.finish(vid, "failed", failure=f"{type(e).__name__}: {e}")
            failures.append({"variant": name, "run": vid, "reason": f"{type(e).__name__}: {e}"})
            continue
        row = {"variant": name, "run": vid, "size_bytes": measure.size_bytes(weights),
               **measure.test_metrics(model, bundle, task)}
        row["sparsity"] = sparsity(model) if spec.quantize == "none" else float("nan")
        row["params"] = _stored_params(model)
        correct = measure.correct_per_sample(model, bundle.test)
        if base_correct is not None and correct is not None:
            row["test_accuracy_delta"], row["delta_ci_low"], row["delta_ci_high"] = \
                measure.paired_bootstrap(base_correct, correct)
        models[name], rows[name] = model, row
        started.append((vid, name, curves, str(weights)))
    times = measure.latencies(models, bundle.in_shape, rounds=rounds, threads=threads)
    src = rows["source"]
    for name, row in rows.items():
        row["latency_b1_ms"], row["latency_b64_ms"] = times[name][1], times[name][64]
        row["size_ratio"] = src["size_bytes"] / row["size_bytes"]
        row["speedup_b1"] = src["latency_b1_ms"] / row["latency_b1_ms"] if name != "source" else 1.0
        row["speedup_b64"] = src["latency_b64_ms"] / row["latency_b64_ms"] if name != "source" else 1.0
    src["speedup_b1"] = src["speedup_b64"] = 1.0
    for vid, name, curves, weights in started:
        metrics = {k: float(v) for k, v in rows[name].items() if isinstance(v, (int, float, np.floating))}
        ledger.finish(vid, "completed", metrics=metrics, curves=curves, checkpoint=weights)
    ordered = [rows["source"]] + [rows[n] for n in rows if n != "source"]
    result = CompressResult(rec.id, ordered, failures)
    folder = Path(out) if out else ledger.root / "reports" / f"compress-{rec.id}"
    result.report = write_report(folder, result, recipe=recipe, metric=recipe.eval.metric)
    return result


def compress_trained(model: nn.Module, recipe: Recipe, bundle, task, run_dir: Path, *, progress: bool = False
                     ) -> tuple[nn.Module, Path, dict[str, float], dict[str, list[float]]]:
    """The recipe route (``[compress]`` in a recipe): compress a model just trained by the recipe runner
    (:func:`dltricks.runner.run.train`), save it in ``run_dir``, and return the compressed model, its
    weights file, its size and latency metrics and the fine-tuning curves."""
    from dltricks.analysis.cost import measure_latency

    model, desc, curves = compress_model(model, recipe, bundle, task, recipe.compress, progress=progress)
    weights = save_compressed(run_dir, model, desc)
    extra = {"size_bytes": float(measure.size_bytes(weights)), "params": _stored_params(model)}
    for b in measure.BATCHES:
        extra[f"latency_b{b}_ms"] = measure_latency(model, bundle.in_shape, b, repeats=10, budget_s=0.3)[0]
    return model, weights, extra, curves


def variant_specs(quantize: list[str | None] | None = None, prune: list[float] | None = None, *,
                  prune_mode: str = "unstructured", prune_scope: str = "layer", prune_steps: int = 1,
                  lottery: bool = False, finetune_epochs: int = 0, finetune_lr_factor: float = 1.0,
                  calibration_batches: int = 8) -> list[CompressSpec]:
    """Every combination of the pruning fractions and quantization kinds asked for (each list may be empty)."""
    from pydantic import ValidationError

    from dltricks.compress.prune import check_fraction
    from dltricks.recipe import explain_errors

    fractions = [check_fraction(p) for p in (prune or [])] or [0.0]
    kinds = [q or "none" for q in quantize or []] or ["none"]  # None: no quantization in this row
    specs = []
    for p in fractions:
        for q in kinds:
            try:
                spec = CompressSpec(prune=p, prune_mode=prune_mode, prune_scope=prune_scope, prune_steps=prune_steps,
                                    rewind=lottery, quantize=q, finetune_epochs=finetune_epochs,
                                    finetune_lr_factor=finetune_lr_factor, calibration_batches=calibration_batches)
            except ValidationError as e:
                raise DltricksError(explain_errors(e, CompressSpec)) from None
            if spec.active:
                specs.append(spec)
    return specs


def _stored_params(model: nn.Module) -> float:
    """Weights and biases as stored (int8 values count once; scales, zero points and BN statistics not)."""
    from dltricks.compress.store import flatten_state

    tensors, _ = flatten_state(model.state_dict())
    skip = ("#scales", "#zero_points", "running_mean", "running_var", "num_batches_tracked", "scale", "zero_point")
    return float(sum(t.numel() for k, t in tensors.items() if not k.endswith(skip)))
