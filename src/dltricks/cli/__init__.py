"""The ``dltricks`` command: one thin function per verb over the Python API, one module per verb family.

``catalogue`` (recipes, show, tricks), ``train``, ``runs``, ``studies`` (ablate, worker, report, tune, nas),
``models`` (ensemble, compress), ``analysis`` (inspect, advise); ``common`` holds what they share and
``main`` the parser and the entry point (``dltricks = "dltricks.cli:main"``, ``python -m dltricks.cli``).
"""

from dltricks.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
