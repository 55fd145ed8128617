"""``train.compile``: :func:`torch.compile` the model for the training step, tried on one training batch before
the run starts. The loop keeps the model itself for everything else (optimiser, checkpoints, evaluation, the
weights saved), so names and files are those of an uncompiled run; ``nn.Module.compile`` is not used, since
on torch 2.13 here it returned without compiling anything (measured with a counting backend). A backend that
cannot compile the model here (no C++ compiler for inductor, an op it cannot lower) refuses the run in one
line: a run recorded with ``train.compile = "inductor"`` was compiled, never silently run eagerly instead.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.tasks import Task

__all__ = ["compile_model", "BACKENDS"]

BACKENDS = ("inductor", "aot_eager", "eager")


def compile_model(model: nn.Module, backend: str, x: torch.Tensor, y: torch.Tensor, task: Task) -> nn.Module:
    """Compile ``model`` with ``backend`` and run it once on the batch ``(x, y)`` as training does (forward
    and backward through ``task``'s loss) and once as evaluation does; the model's weights, buffers
    (batch-norm statistics) and torch's RNG are left as they were. Returns the compiled module (it shares
    the model's parameters); a failure is a one-line refusal."""
    if backend not in BACKENDS:
        raise DltricksError(f"train.compile = {backend!r} is not a backend; valid: off, {', '.join(BACKENDS)}")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    try:
        net = torch.compile(model, backend=backend)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            model.train()
            task.loss(net(x), y).backward()
            model.eval()
            with torch.no_grad():
                net(x)
    except Exception as e:  # noqa: BLE001 - whatever the compiler raises, the run is refused with it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DltricksError(f"train.compile = {backend!r}: the {backend} backend cannot compile this model here "
                            f"({type(e).__name__}: {first}); set train.compile = 'off' to train it uncompiled, "
                            "or try 'aot_eager'") from None
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return net
