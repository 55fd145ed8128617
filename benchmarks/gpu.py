"""The GPU path, measured: a 2D ResNet on synthetic images with bf16 autocast and channels-last.

Three numbers, each images per second of training (after a warm-up epoch):

1. ``fit`` against a bare hand-written loop in the same process (same model, data, batches, optimiser);
2. ``fit`` on 2 processes (torchrun, gloo on CPU / nccl on CUDA, the global batch shared out) against 1.

Where CUDA is present the full version runs (ResNet [2, 2, 2] x [32, 64, 128] on 3 x 64 x 64 images, bf16,
channels-last); on a CPU it runs a reduced version (fp32, 3 x 16 x 16, few steps) and says so: the numbers
then show that the path works, not how fast a GPU is. Never needed by CI or the tests.

    python benchmarks/gpu.py                    # whatever this machine has
    python benchmarks/gpu.py --steps 200 --batch 256
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from dltricks import fit
from dltricks.nn.models.registry import build_model
from dltricks.nn.models.resnet import ResNetSpec


def setting(args: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available()
    if cuda:
        return {"device": "cuda", "precision": "bf16", "size": 64, "channels": [32, 64, 128], "reduced": False,
                "steps": args.steps or 100, "batch": args.batch or 128}
    return {"device": "cpu", "precision": "fp32", "size": 16, "channels": [8, 16, 32], "reduced": True,
            "steps": args.steps or 8, "batch": args.batch or 32}


def data(cfg: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = cfg["steps"] * cfg["batch"]
    x = torch.randn(n, 3, cfg["size"], cfg["size"], generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def model(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ResNetSpec(layers=[2, 2, 2], channels=cfg["channels"]), (3, cfg["size"], cfg["size"]), 10)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare(cfg: dict, x: torch.Tensor, y: torch.Tensor, net: torch.nn.Module, epochs: int) -> float:
    """A hand-written loop: seeded permutation, autocast, AdamW, one loss.item() per step. Images/s."""
    dev = torch.device(cfg["device"])
    net = net.to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    x, y = x.to(dev), y.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g, b = torch.Generator().manual_seed(0), cfg["batch"]
    dtype = torch.bfloat16 if cfg["precision"] == "bf16" else None
    t0 = 0.0
    for epoch in range(epochs + 1):  # the first epoch warms up (cudnn autotune, allocator)
        if epoch == 1:
            sync(cfg["device"])
            t0 = time.perf_counter()
        perm = torch.randperm(len(x), generator=g).to(dev)
        for i in range(0, len(x), b):
            idx = perm[i:i + b]
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
    sync(cfg["device"])
    return epochs * len(x) / (time.perf_counter() - t0)


def with_fit(cfg: dict, x: torch.Tensor, y: torch.Tensor, net: torch.nn.Module, epochs: int) -> float:
    """``fit`` with progress off: one warm-up epoch, then ``epochs`` timed. Images/s."""
    keys = {"batch_size": cfg["batch"], "lr": 1e-3, "optimizer": "adamw", "device": cfg["device"],
            "precision": cfg["precision"], "progress": False, "threads": torch.get_num_threads()}
    fit(net, (x, y), epochs=1, **keys)
    sync(cfg["device"])
    t0 = time.perf_counter()
    fit(net, (x, y), epochs=epochs, **keys)
    sync(cfg["device"])
    return epochs * len(x) / (time.perf_counter() - t0)


def ranks(cfg: dict, nproc: int, epochs: int) -> float:
    """``fit`` on ``nproc`` processes under torchrun (this script's --rank-child mode). Images/s of rank 0."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               __file__, "--rank-child", out, "--epochs", str(epochs), "--steps", str(cfg["steps"]),
               "--batch", str(cfg["batch"])]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        with open(out) as f:
            return json.load(f)["images_per_s"]


def rank_child(args: argparse.Namespace) -> None:
    cfg = setting(args)
    x, y = data(cfg)
    rate = with_fit(cfg, x, y, model(cfg), args.epochs)
    if os.environ.get("RANK", "0") == "0":
        with open(args.rank_child, "w") as f:
            json.dump({"images_per_s": rate}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=0, help="steps per epoch (default 100 on CUDA, 8 on CPU)")
    p.add_argument("--batch", type=int, default=0, help="global batch (default 128 on CUDA, 32 on CPU)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs")
    p.add_argument("--nproc", type=int, default=2, help="processes of the DDP measurement")
    p.add_argument("--rank-child", metavar="OUT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank_child:
        return rank_child(args)
    cfg = setting(args)
    if cfg["reduced"]:
        print("no CUDA here: the reduced CPU version (fp32, 3x16x16, few steps) - it shows the path works, "
              "not how fast a GPU trains")
    else:
        print(f"CUDA: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s); bf16, channels-last")
    x, y = data(cfg)
    net = model(cfg)
    b = bare(cfg, x, y, copy.deepcopy(net), args.epochs)
    f = with_fit(cfg, x, y, copy.deepcopy(net), args.epochs)
    print(f"bare loop      {b:10.1f} images/s")
    print(f"fit            {f:10.1f} images/s   fit / bare = {f / b:.3f}")
    have = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
    if have < args.nproc:
        print(f"DDP: skipped, {args.nproc} processes need {args.nproc} devices and this machine has {have}")
        return
    one = ranks(cfg, 1, args.epochs)
    many = ranks(cfg, args.nproc, args.epochs)
    print(f"fit, 1 process {one:10.1f} images/s")
    print(f"fit, {args.nproc} procs   {many:10.1f} images/s   speed-up {many / one:.2f}x "
          f"(ideal {args.nproc}x; the global batch {cfg['batch']} shared out)")


if __name__ == "__main__":
    main()
