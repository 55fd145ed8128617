"""Does compression pay on this CPU? Size and latency ratios, measured side by side, with accuracy.

Two cases, each trained here from a bundled recipe into a throwaway ledger, then compressed with
:func:`dltricks.compress.compress_run` (the same code as ``dltricks compress``):

1. a Linear-heavy model (the MNIST-1D MLP widened to 2 x 1024 units) with dynamic int8,
   weight-only int8 and static int8;
   target: >= 3.5x smaller and >= 1.5x faster at batch 64 with <= 1 point accuracy loss;
2. the bundled CNN (mnist1d-cnn) with 50% of its channels removed (Torch-Pruning) and fine-tuned,
   with and without static int8 on top;
   target: >= 1.5x faster at batch 64 with <= 1 point accuracy loss.

Latency is the median of interleaved rounds on one thread (see dltricks.compress.measure), so the
ratios hold on a busy machine even when the absolute milliseconds do not.

    python benchmarks/compress.py                  # about 2-4 minutes on 2 CPU cores
    python benchmarks/compress.py --rounds 15      # steadier ratios on a quiet machine
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from dltricks.compress import compress_run, variant_specs
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.runner.run import train


def _check(row: dict, *, smaller: float | None, faster: float, max_drop: float) -> str:
    ok = (smaller is None or row["size_ratio"] >= smaller) and row["speedup_b64"] >= faster \
        and -100 * row["test_accuracy_delta"] <= max_drop
    return "meets target" if ok else "misses target"


def _show(title: str, rows: list[dict], targets: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'variant':<26} {'size KiB':>9} {'smaller':>8} {'b1 ms':>8} {'faster b1':>9} {'b64 ms':>8} "
          f"{'faster b64':>10} {'test acc':>8} {'delta pt [95% CI]':>20}  verdict")
    for r in rows:
        delta = "" if "test_accuracy_delta" not in r else \
            f"{100 * r['test_accuracy_delta']:+.1f} [{100 * r['delta_ci_low']:+.1f},{100 * r['delta_ci_high']:+.1f}]"
        verdict = _check(r, **targets[r["variant"]]) if r["variant"] in targets else ""
        print(f"{r['variant']:<26} {r['size_bytes'] / 1024:>9.1f} {r['size_ratio']:>7.2f}x "
              f"{r['latency_b1_ms']:>8.3f} {r['speedup_b1']:>8.2f}x {r['latency_b64_ms']:>8.3f} "
              f"{r['speedup_b64']:>9.2f}x {r['test_accuracy']:>8.4f} {delta:>20}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--only", choices=["mlp", "cnn"], help="run one of the two cases")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(url=f"sqlite:///{tmp}/ledger.db", root=tmp)
        if args.only != "cnn":
            mlp = train(Recipe.load("mnist1d-mlp", ["model.hidden=[1024, 1024]", "train.epochs=15"]),
                        ledger=ledger, progress=False)
            result = compress_run(ledger, mlp.run_id, variant_specs(["dynamic", "weight_only", "static"]),
                                  progress=False, rounds=args.rounds, out=f"{tmp}/mlp")
            _show("1. Linear-heavy MLP (40 -> 1024 -> 1024 -> 10), int8", result.rows,
                  {"dynamic": dict(smaller=3.5, faster=1.5, max_drop=1.0)})
        if args.only == "mlp":
            return 0
        cnn = train(Recipe.load("mnist1d-cnn"), ledger=ledger, progress=False)
        specs = variant_specs([None, "static"], [0.5], prune_mode="structured", finetune_epochs=args.finetune_epochs)
        result = compress_run(ledger, cnn.run_id, specs + variant_specs(["static"]), progress=False,
                              rounds=args.rounds, out=f"{tmp}/cnn")
        name = f"prune-s0.5+ft{args.finetune_epochs}"
        _show("2. bundled CNN (mnist1d-cnn, channels 32/64/128), 50% structured channel pruning", result.rows,
              {name: dict(smaller=None, faster=1.5, max_drop=1.0)})
    print("\nsize: weights file on disk; latency: median of interleaved rounds, 1 thread; delta: test accuracy "
          "change vs the source, paired bootstrap 95% CI over test samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
