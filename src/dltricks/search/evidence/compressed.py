"""Size and latency of compressed arms against their float baseline, per seed: the baseline's size is its
weights file, and both models' latencies are timed side by side now, in this process (a latency a worker
recorded while another worker trained beside it would not be comparable)."""

from __future__ import annotations

from dltricks.ledger import Ledger

MEASURED = ("size_bytes", "latency_b1_ms")


def measured_scores(ledger: Ledger, run_ids: dict[str, dict[int, str]], reference: str, metric: str,
                    recorded: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """``{variant: {seed: value}}`` of ``metric`` (one of :data:`MEASURED`) for the reference and every arm."""
    from dltricks.compress.measure import latencies, size_bytes
    from dltricks.compress.runs import compressed_model
    from dltricks.methods.build import model_from_run

    scores: dict[str, dict[int, float]] = {v: {} for v in run_ids}
    for seed, base_id in run_ids.get(reference, {}).items():
        if metric == "size_bytes":
            scores[reference][seed] = float(size_bytes(ledger.run_dir(base_id) / "model.safetensors"))
            for v in run_ids:
                if v != reference and seed in recorded.get(v, {}):
                    scores[v][seed] = recorded[v][seed]
            continue
        _, bundle, base = model_from_run(ledger, base_id, why="its latency is measured")
        models = {reference: base}
        models.update({v: compressed_model(ledger, ids[seed]) for v, ids in run_ids.items()
                       if v != reference and seed in ids})
        in_shape = tuple(bundle.in_shape)
        for v, by_batch in latencies(models, in_shape, batches=(1,)).items():
            scores[v][seed] = by_batch[1]
    return scores
