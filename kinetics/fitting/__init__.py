"""Fitting: a model and data turned into an estimate.

:mod:`.problem` (conditions, noise models, :class:`FitProblem`: residuals and their
sensitivities), :mod:`.local` (one local fit), :mod:`.optimize` (:func:`fit`, :class:`FitResult`,
multistart), :mod:`.profile` and :mod:`.sample` (profiles and MCMC chains of a result, as tasks
on any executor) and :mod:`.executors` (which executors are accepted). Fit specification files are read by :mod:`kinetics.io.fit_spec`.
Names are loaded on first access (lmfit is slow to import).
"""

import importlib

_EXPORTS = {"FitProblem": "problem", "Condition": "problem", "load_fit_spec": "problem", "load_petab": "problem",
            "fit": "optimize", "FitResult": "optimize",
            "CHI2_95": "optimize"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
