"""Analysis of models and fits: questions asked of a model or a fitted result.

:mod:`.compare` (model selection: AIC, likelihood ratio), :mod:`.steady` (steady states,
scenarios; the plan's jobs in :mod:`.steady_affine`, :mod:`.steady_symbolic`,
:mod:`.steady_newton`, :mod:`.steady_messages`), :mod:`.pk` (pharmacokinetic summaries), :mod:`.uncertainty` (propagating a
fit's uncertainty to predictions) and :mod:`.gsa` (Sobol' and Morris global sensitivity, with SALib). Names are loaded on first access.
"""

import importlib

_EXPORTS = {"compare": "compare", "akaike_weights": "compare", "steady_state": "steady", "steady_plan": "steady",
            "compare_scenarios": "steady", "SteadyState": "steady", "pk_summary": "pk", "PKSummary": "pk",
            "predict_with_uncertainty": "uncertainty", "steady_state_uncertainty": "uncertainty",
            "pk_uncertainty": "uncertainty", "sobol": "gsa", "morris": "gsa"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
