"""Learning set-ups: each registers itself (:func:`~dltricks.methods.registry.register_method`) and owns
its evaluation (task, head width, checks, metric names, metrics, figures); the step it trains with is a
:class:`dltricks.loop.method.Method` composed by :func:`~dltricks.methods.base.build_method` from recipe
keys: transfer, distillation, multi-task, semi-supervised learning (:mod:`~dltricks.methods.ssl`), domain
adaptation (:mod:`~dltricks.methods.domain`), meta-learning, few-shot and zero-shot, uncertainty.
"""

from dltricks.methods.base import build_method
from dltricks.methods.build import build, make_task, model_from_run
from dltricks.methods.registry import Setup, Trained, register_method, registered_methods, setups_for

__all__ = ["Setup", "Trained", "build", "build_method", "make_task", "model_from_run", "register_method",
           "registered_methods", "setups_for"]
