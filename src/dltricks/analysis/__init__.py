"""What a model sees and costs, and what the tips say about a recipe.

- :func:`receptive_field` (exact, Araujo et al. 2019) and :func:`empirical_receptive_field` (input gradients)
- :func:`cost`: parameters, FLOPs (``torch.utils.flop_counter``), activation memory, CPU latency
- :func:`inspect_recipe` / :func:`compare_recipes`: layer tables for ``dltricks inspect``
- :func:`advise` / :func:`apply_advice`: the rules behind ``dltricks advise``
"""

from dltricks.analysis.advisor import Advice, advice_to_json, advise, apply_advice, render_advice
from dltricks.analysis.cost import Cost, cost, measure_latency
from dltricks.analysis.inspect import (
                                       Comparison,
                                       DataInfo,
                                       Inspection,
                                       compare_recipes,
                                       data_info,
                                       inspect_model,
                                       inspect_recipe,
)
from dltricks.analysis.receptive_field import RF, EmpiricalRF, empirical_receptive_field, receptive_field
from dltricks.analysis.trace import Trace, trace

__all__ = [
                                       "RF",
                                       "Advice",
                                       "Comparison",
                                       "Cost",
                                       "DataInfo",
                                       "EmpiricalRF",
                                       "Inspection",
                                       "Trace",
                                       "advice_to_json",
                                       "advise",
                                       "apply_advice",
                                       "compare_recipes",
                                       "cost",
                                       "data_info",
                                       "empirical_receptive_field",
                                       "inspect_model",
                                       "inspect_recipe",
                                       "measure_latency",
                                       "receptive_field",
                                       "render_advice",
                                       "trace",
]
