"""kinetics: compartment kinetics of exosome (extracellular vesicle) production and clearance.

Symbolic compartment models (:class:`Model`, :func:`load_model`) are compiled once to fast
numerical form (exact matrix-exponential solutions for affine-linear systems, a compiled stiff
integrator otherwise), simulated with doses and events (:func:`simulate`), and fitted to
time-course data with lmfit.
"""

from .errors import (DataError, ExpressionError, FitError, KineticsError, KineticsWarning, ModelError,
                     SolverError, UnitError)
from .model.core import Compartment, Flow, Model, Observable, Parameter, load_model, load_sbml
from .simulation.schedule import Dose, Event, Infusion, Schedule, Simulation, simulate
from .simulation.compiled import compile_model, warm_up
from .simulation.ensemble import Ensemble, simulate_many

__version__ = "0.1.0"

# The main functions of the subpackages, loaded on first access (lmfit and pandas-heavy modules
# are slow to import). kinetics.fit and kinetics.compare are also old module paths: once such a
# module is imported Python sets the attribute to it, and it is callable as the function.
_LAZY = {"fit": ("kinetics.fitting.optimize", "fit"), "FitResult": ("kinetics.fitting.optimize", "FitResult"),
         "load_fit_spec": ("kinetics.fitting.problem", "load_fit_spec"),
         "compare": ("kinetics.analysis.compare", "compare"), "Comparison": ("kinetics.analysis.compare", "Comparison"),
         "steady_state": ("kinetics.analysis.steady", "steady_state"),
         "SteadyState": ("kinetics.analysis.steady", "SteadyState"),
         "pk_summary": ("kinetics.analysis.pk", "pk_summary"), "PKSummary": ("kinetics.analysis.pk", "PKSummary")}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'kinetics' has no attribute {name!r}")


__all__ = [
    "Model", "Compartment", "Parameter", "Flow", "Observable", "load_model", "load_sbml",
    "simulate", "simulate_many", "Ensemble", "Simulation", "Schedule", "Dose", "Infusion", "Event",
    "KineticsError", "ModelError", "ExpressionError", "UnitError", "DataError", "SolverError", "FitError",
    "KineticsWarning", "compile_model", "warm_up", "__version__",
    "fit", "FitResult", "load_fit_spec", "compare", "Comparison", "steady_state", "SteadyState", "pk_summary", "PKSummary",
]
