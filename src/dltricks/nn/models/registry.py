"""The model registry: a model is a recipe schema plus a builder ``(spec, in_shape, num_classes) -> Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dltricks.errors import unknown
from dltricks.recipe import ModelSpec, UserModelSpec, register_section

Builder = Callable[[ModelSpec, tuple[int, ...], int], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_model(name: str, spec: type[ModelSpec]) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_model("cnn", CNNSpec)`` on ``build(spec, in_shape, num_classes)``: the
    in-process way to add a model (a script or notebook that then calls ``dltricks.train``/``ablate``).

    ``in_shape`` is one sample's shape without the batch: (C, *spatial), or (F,) for vectors.
    Classifiers return (N, num_classes) logits; segmenters (N, num_classes, *spatial). ``spec`` subclasses
    :class:`~dltricks.recipe.ModelSpec` with the model's own keys (typed, so tricks and ``tune`` can set them)::

        class TinySpec(dltricks.recipe.ModelSpec):
            name: str = "tiny"
            width: int = 32

        @dltricks.register_model("tiny", TinySpec)
        def build_tiny(spec, in_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(spec.width), nn.ReLU(), nn.Linear(spec.width, num_classes))

    Registered models live in this process only: workers of ``ablate`` started as separate processes
    (``dltricks worker``) do not see them. A model in a file, ``model.name = "my_models:TinyNet"``, works
    everywhere (see :mod:`dltricks.nn.models.imported`).
    """

    def deco(fn: Builder) -> Builder:
        register_section("model", name, spec)
        _BUILDERS[name] = fn
        return fn

    return deco


def spatial_dims(model: str, in_shape: tuple[int, ...]) -> int:
    """The number of spatial dims of (C, *spatial) input that a conv model needs (1, 2 or 3)."""
    from dltricks.nn.layers import BuildError

    dims = len(in_shape) - 1
    if dims not in (1, 2, 3):
        raise BuildError(f"{model} needs (C, *spatial) input with 1-3 spatial dims, got shape {tuple(in_shape)}")
    return dims


def models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(spec: ModelSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model ``spec`` names; with ``spec.embedding_dim`` its head outputs (N, embedding_dim)
    embeddings instead of (N, num_classes) scores: the same backbone, a metric-learning head."""
    if isinstance(spec, UserModelSpec):
        from dltricks.nn.models.imported import build_imported

        return build_imported(spec, tuple(in_shape), spec.embedding_dim or num_classes)
    if spec.name not in _BUILDERS:
        raise unknown("model", spec.name, _BUILDERS)
    width = spec.embedding_dim or num_classes
    return _BUILDERS[spec.name](spec, tuple(in_shape), width)
