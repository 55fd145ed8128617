"""Learning set-ups that change what a training step computes: transfer, distillation, multi-task,
semi-supervised learning (:mod:`~dltricks.methods.ssl`) and domain adaptation (:mod:`~dltricks.methods.domain`).

Each is a :class:`dltricks.loop.method.Method` chosen by recipe keys; :func:`build_method` is registered
with the training package so that the recipe runner finds it without importing this package.
"""

from dltricks.methods.base import build_method  # noqa: F401  (registers the factory)

__all__ = ["build_method"]
