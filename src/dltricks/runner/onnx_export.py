"""A recorded run's model as ONNX, checked against PyTorch with onnxruntime on the run's test inputs.

    result = export_onnx(ledger, "3f2a9c", "model.onnx")
    result.max_abs_diff        # largest |onnxruntime - torch| over every output of every test input

The model is rebuilt from the run's recipe and loaded from its safetensors weights (a compressed
run: its compressed model), exported by ``torch.onnx.export`` (the dynamo exporter, batch size
dynamic), then run by onnxruntime on the test split. A model ONNX cannot express (an int8 layer of
torch.ao, an op without an ONNX form) is refused with the exporter's reason, and nothing is left at
the destination. Needs ``dltricks[export]`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.ledger.export import needs, writable_dir

__all__ = ["OnnxResult", "export_onnx", "run_model"]

TOLERANCE = 1e-4  # float32 kernels differ by ~1e-6 on such models; more means the graph computes otherwise


@dataclass
class OnnxResult:
    path: Path
    run_id: str
    inputs: int  # test inputs compared
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def run_model(ledger: Ledger, run_id: str) -> tuple[str, nn.Module, torch.Tensor]:
    """The run's id, its model (eval mode, CPU) and its test inputs ``(N, C, *spatial)``."""
    from dltricks.data import load_data
    from dltricks.loop.from_run import completed_run
    from dltricks.methods.build import model_from_run
    from dltricks.recipe import Recipe

    rec = completed_run(ledger, run_id, why="its model is exported")
    recipe = Recipe.from_dict(rec.recipe, source=f"run {rec.id}")
    if recipe.compress.active:
        from dltricks.compress import compressed_model

        model, bundle = compressed_model(ledger, rec.id).eval(), load_data(recipe.data, recipe.seed)
    else:
        _, bundle, model = model_from_run(ledger, rec.id, why="its model is exported")
    test = bundle.test
    if not (isinstance(test, tuple) and isinstance(test[0], torch.Tensor)):
        raise DltricksError(f"run {rec.id}: its test split is not a tensor of inputs ({type(test).__name__}); "
                            "ONNX export checks the model on test inputs")
    return rec.id, model.cpu().eval(), test[0].float()


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _outputs(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _outputs(v)]
    raise DltricksError(f"the model returns {type(out).__name__}; ONNX export takes tensors (or tuples, dicts of them)")


def _destination(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.suffix != ".onnx":
        raise DltricksError(f"ONNX file {p} must end in .onnx")
    if p.is_dir():
        raise DltricksError(f"ONNX file {p} is a folder; give a file name such as {p / 'model.onnx'}")
    writable_dir(p.parent, f"the folder of {p.name}")
    return p.resolve()


def _reason(e: Exception) -> str:
    """The exporter's reason in one line: its "Exception summary" when it gives one, without colours."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return (first or type(e).__name__)[:300]


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    import contextlib
    import io
    import logging

    batch = torch.export.Dim("batch", min=1)
    # the exporter's chatter (skipped torchvision ops, graphs it printed, shape warnings) is not the
    # user's business: a failure comes back as one line from the exception
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.fx", "torch._dynamo", "torch.export",
                                            "torch._export")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                              input_names=["x"], external_data=False, verbose=False, report=False)
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def export_onnx(ledger: Ledger, run_id: str, path: str | Path, *, tolerance: float = TOLERANCE,
                batch_size: int = 256) -> OnnxResult:
    """Export run ``run_id``'s model to ``path`` and compare it with PyTorch on every test input."""
    needs("onnx", "onnx")
    needs("onnxscript", "onnxscript")
    ort = needs("onnxruntime", "onnxruntime")
    dest = _destination(path)
    rid, model, x = run_model(ledger, run_id)
    tmp = dest.with_name(dest.name + ".part")
    try:
        int8 = sorted({type(m).__name__ for m in model.modules() if ".quantized" in type(m).__module__})
        if int8:
            raise DltricksError(f"run {rid}: ONNX cannot express this model: its int8 layers of torch.ao "
                                f"({', '.join(int8)}) have no ONNX form in torch.onnx.export; export the float "
                                "source run, or a pruned variant without quantization")
        try:
            _export(model, x[:2], tmp)
        except Exception as e:  # noqa: BLE001 - the exporter's reason is the answer: one line
            raise DltricksError(f"run {rid}: ONNX cannot express this model ({_reason(e)})") from None
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        worst = 0.0
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size]
                want = [t.float().numpy() for t in _outputs(model(xb))]
                got = session.run(None, {name: xb.numpy()})
                if len(got) != len(want):
                    raise DltricksError(f"run {rid}: the ONNX graph gives {len(got)} outputs, PyTorch {len(want)}")
                worst = max([worst] + [float(np.max(np.abs(np.asarray(g, dtype=np.float64) - w)))
                                       for g, w in zip(got, want)])
        os.replace(tmp, dest)  # only a checked graph reaches the destination
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxResult(dest, rid, len(x), worst, tolerance)
