"""How long receptive_field + cost take on a ResNet-50-sized 2D model (target: under 2 s).

    .venv/bin/python benchmarks/analysis_speed.py [--size 224] [--repeats 3] [--json]

Builds torchvision's ResNet-50 layout with dltricks' resnet builder (25.6M parameters, 4.1 GMACs at
224x224), then times ``receptive_field`` and ``cost`` (FLOPs, memory and a measured CPU latency) together.
The first analysis in a process also pays a one-off import of ``torch._dynamo`` (pulled in by torch's
dispatch modes); it is reported apart, since every later call is free of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dltricks.analysis import cost, receptive_field
from dltricks.nn import build_model
from dltricks.nn.models.resnet import resnet50_spec

TARGET_S = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="input side in pixels")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of receptive_field + cost")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    shape = (3, args.size, args.size)
    t0 = time.perf_counter()
    model = build_model(resnet50_spec(), shape, 1000)
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    receptive_field(torch.nn.Conv2d(1, 1, 1), (1, 4, 4))  # the one-off import, timed apart
    first_use_s = time.perf_counter() - t0

    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        rf = receptive_field(model, shape)
        t1 = time.perf_counter()
        c = cost(model, shape)
        t2 = time.perf_counter()
        runs.append((t1 - t0, t2 - t1, t2 - t0))
    rf_s = statistics.median(r[0] for r in runs)
    cost_s = statistics.median(r[1] for r in runs)
    total_s = statistics.median(r[2] for r in runs)
    result = {
        "model": "resnet50 (torchvision layout)", "input": list(shape), "params": c.params, "gmacs": c.macs / 1e9,
        "receptive_field": list(rf.size), "rf_stride": list(rf.stride), "latency_ms": c.latency_ms,
        "build_s": round(build_s, 3), "first_use_import_s": round(first_use_s, 3),
        "receptive_field_s": round(rf_s, 3), "cost_s": round(cost_s, 3), "total_s": round(total_s, 3),
        "target_s": TARGET_S, "ratio_to_target": round(total_s / TARGET_S, 3), "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"ResNet-50 at {args.size}x{args.size}: {c.params / 1e6:.2f}M params, {c.macs / 1e9:.2f} GMACs, "
              f"RF {rf.size[0]} (stride {rf.stride[0]}), latency {c.latency_ms:.0f} ms on one core")
        print(f"receptive_field {rf_s:.2f} s + cost {cost_s:.2f} s = {total_s:.2f} s "
              f"(median of {args.repeats}); target {TARGET_S:.1f} s: ratio {total_s / TARGET_S:.2f} "
              f"[{'ok' if total_s < TARGET_S else 'SLOW'}]")
        print(f"(one-off first-use import {first_use_s:.2f} s; model build {build_s:.2f} s; not counted)")
    return 0 if total_s < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
