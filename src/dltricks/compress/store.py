"""Compressed models on disk: weights as safetensors plus a JSON description to rebuild them. No pickle.

A folder holds two files:

- ``model.safetensors``: every entry of the compressed model's state dict as plain tensors. int8
  tensors (torch's quantized tensors) are stored as their integer values with their scales and zero
  points; packed parameters (tuples) and dtypes are spelled out in a JSON layout in the file's metadata;
- ``compressed.json``: the recipe the float model is built from, its input shape and classes, and the
  steps that give the compressed architecture: the channel-pruning plan, the layers kept as CSR, the
  quantization kind.

:func:`load_compressed` builds the float model from the recipe, replays the steps (with a dummy input
where torch needs one to trace), then loads the stored tensors over it with ``strict=True``: the
rebuilt model gives exactly the outputs of the one that was saved.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from dltricks.compress import ao
from dltricks.errors import DltricksError

__all__ = ["FORMAT", "Description", "load_compressed", "rebuild", "save_compressed", "unflatten_state",
           "flatten_state"]

FORMAT = "dltricks-compressed/1"
WEIGHTS, DESCRIPTION = "model.safetensors", "compressed.json"


@dataclass
class Description:
    """What rebuilds a compressed model: the recipe (a dict) and the steps applied to its float model."""

    recipe: dict[str, Any]
    in_shape: list[int]
    num_classes: int
    structured_plan: list | None = None
    sparse_layers: list[str] = field(default_factory=list)
    quantize: str = "none"
    source_run: str = ""
    format: str = FORMAT


# ---- state dicts with quantized tensors as plain tensors --------------------------------------------

def flatten_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, layout)``: plain tensors for safetensors and a JSON-able layout that
    :func:`unflatten_state` turns back into ``state``."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}

    def put(key: str, value: Any) -> Any:
        if isinstance(value, torch.dtype):
            return {"kind": "dtype", "value": str(value).removeprefix("torch.")}
        if value is None:
            return {"kind": "none"}
        if isinstance(value, (tuple, list)):
            return {"kind": "tuple", "items": [put(f"{key}#{i}", v) for i, v in enumerate(value)]}
        if isinstance(value, torch.Tensor) and value.is_quantized:
            entry = {"kind": "qtensor", "dtype": str(value.dtype).removeprefix("torch.")}
            tensors[f"{key}#int"] = value.int_repr().contiguous()
            if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                entry.update(scheme="tensor", scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
            else:
                entry.update(scheme="channel", axis=int(value.q_per_channel_axis()))
                tensors[f"{key}#scales"] = value.q_per_channel_scales().contiguous()
                tensors[f"{key}#zero_points"] = value.q_per_channel_zero_points().contiguous()
            return entry
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().clone().contiguous()  # clone: safetensors refuses shared storage
            return {"kind": "tensor"}
        raise DltricksError(f"cannot store state entry {key!r} of type {type(value).__name__} as safetensors")

    for key, value in state.items():
        layout[key] = put(key, value)
    # per-module format versions: quantized layers read their state by version, so they travel too
    versions = {prefix: dict(meta) for prefix, meta in getattr(state, "_metadata", {}).items()}
    return tensors, {"entries": layout, "versions": versions}


def unflatten_state(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    def get(key: str, entry: dict) -> Any:
        kind = entry["kind"]
        if kind == "dtype":
            return getattr(torch, entry["value"])
        if kind == "none":
            return None
        if kind == "tuple":
            return tuple(get(f"{key}#{i}", e) for i, e in enumerate(entry["items"]))
        if kind == "qtensor":
            # the integer tensor's dtype (int8 / uint8 / int32) selects qint8 / quint8 / qint32
            ints = tensors[f"{key}#int"]
            if entry["scheme"] == "tensor":
                return torch._make_per_tensor_quantized_tensor(ints, entry["scale"], entry["zero_point"])
            return torch._make_per_channel_quantized_tensor(ints, tensors[f"{key}#scales"],
                                                            tensors[f"{key}#zero_points"], entry["axis"])
        return tensors[key]

    state = OrderedDict((key, get(key, entry)) for key, entry in layout["entries"].items())
    state._metadata = OrderedDict((prefix, dict(meta)) for prefix, meta in layout["versions"].items())  # type: ignore[attr-defined]
    return state


# ---- int8 LSTM/GRU: their packed weights are TorchScript objects, stored as their int8 tensors instead ----

_RNN = "#rnn."


def _quantized_rnns(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"{n}." if n else "", m) for n, m in model.named_modules()
            if hasattr(m, "_all_weight_values") and hasattr(m, "set_weight_bias")]


def _rnn_weights_out(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    for prefix, module in _quantized_rnns(model):
        for key in [k for k in state if k.startswith(prefix + "_all_weight_values.")]:
            del state[key]
        for params in module._weight_bias().values():  # {"weight": {"weight_ih_l0": ...}, "bias": {...}}
            for name, value in params.items():
                state[f"{prefix}{_RNN}{name}"] = value
    return state


def _rnn_weights_in(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    for prefix, module in _quantized_rnns(model):
        keys = [k for k in state if k.startswith(prefix + _RNN)]
        weights = {key[len(prefix + _RNN):]: state.pop(key) for key in keys}
        module.set_weight_bias(weights)  # repacks the int8 tensors exactly as quantize_dynamic packed them
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(prefix + "_all_weight_values.")})
    return state


# ---- folders -------------------------------------------------------------------------------------------

def save_compressed(folder: str | Path, model: nn.Module, description: Description) -> Path:
    """Write ``model.safetensors`` and ``compressed.json`` into ``folder``; return the weights' path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, layout = flatten_state(_rnn_weights_out(model, model.state_dict()))
    weights = folder / WEIGHTS
    save_file(tensors, str(weights), metadata={"format": FORMAT, "layout": json.dumps(layout)})
    (folder / DESCRIPTION).write_text(json.dumps(asdict(description), indent=1))
    return weights


def read_description(folder: str | Path) -> Description:
    path = Path(folder) / DESCRIPTION
    if not path.is_file():
        raise DltricksError(f"{folder} holds no compressed model (no {DESCRIPTION})")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DltricksError(f"{path} is not valid JSON: {e}") from None
    if d.get("format") != FORMAT:
        raise DltricksError(f"{path} has format {d.get('format')!r}; this dltricks reads {FORMAT}")
    return Description(**d)


def rebuild(description: Description) -> nn.Module:
    """The compressed architecture of ``description`` with freshly initialised (or placeholder) weights."""
    from dltricks.compress import quantize, sparse, structured
    from dltricks.nn import build_model
    from dltricks.recipe import Recipe

    recipe = Recipe.from_dict(description.recipe, source=DESCRIPTION)
    model = build_model(recipe.model, tuple(description.in_shape), description.num_classes).eval()
    example = torch.randn(2, *description.in_shape)  # 2: BatchNorm in training mode (QAT) needs more than one
    if description.structured_plan:
        structured.replay(model, example[:1], description.structured_plan)
    for name in description.sparse_layers:
        sparse.to_csr(model, name)
    q = description.quantize
    if q == "dynamic":
        model = quantize.dynamic_int8(model)
    elif q in ("static", "qat"):
        model = quantize.static_int8(model, example, [example]) if q == "static" else \
            quantize.qat_int8(model, example, lambda m: m(example))
    elif q == "weight_only":
        model = quantize.weight_only_int8(model)
    return model.eval()


def load_compressed(folder: str | Path) -> tuple[nn.Module, Description]:
    """The compressed model saved in ``folder`` (eval mode, CPU) and its description."""
    folder = Path(folder)
    description = read_description(folder)
    weights = folder / WEIGHTS
    try:
        tensors = load_file(str(weights))
        with safe_open(str(weights), "pt") as f:
            layout = json.loads((f.metadata() or {})["layout"])
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as e:
        raise DltricksError(f"cannot read compressed weights {weights}: {e}") from None
    model = rebuild(description)
    try:
        with ao.quiet():
            model.load_state_dict(_rnn_weights_in(model, unflatten_state(tensors, layout)), strict=True)
    except RuntimeError as e:
        raise DltricksError(f"compressed weights {weights} do not fit the model its description rebuilds: "
                            f"{str(e).strip().splitlines()[0]}") from None
    return model.eval(), description
