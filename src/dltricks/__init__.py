"""dltricks: deep learning tips and tricks as components that run and experiments that measure them.

    import dltricks
    history = dltricks.fit(model, (x, y), epochs=10, batch_size=64, lr=1e-3)
    result = dltricks.train("mnist1d-cnn")
    study = dltricks.ablate("mnist1d-cnn", ["label_smoothing", "one_cycle"], seeds=5)
"""

__version__ = "0.1.0"

_LAZY = {
    "Recipe": "dltricks.recipe",
    "fit": "dltricks.loop.training",
    "evaluate": "dltricks.loop.training",
    "History": "dltricks.loop.training",
    "train": "dltricks.runner.run",
    "RunResult": "dltricks.runner.run",
    "ablate": "dltricks.search.ablate",
    "AblationResult": "dltricks.search.ablate",
    "Ledger": "dltricks.ledger",
    "report_metrics": "dltricks.reporting",  # torch-free: training scripts of command studies import it
    "register_model": "dltricks.nn.models.registry",  # the in-process way to add a model
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    # import torch-heavy parts on first use, so `dltricks --help` stays quick
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dltricks' has no attribute {name!r}")
