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

__all__ = [
    "Model", "Compartment", "Parameter", "Flow", "Observable", "load_model", "load_sbml",
    "simulate", "simulate_many", "Ensemble", "Simulation", "Schedule", "Dose", "Infusion", "Event",
    "KineticsError", "ModelError", "ExpressionError", "UnitError", "DataError", "SolverError", "FitError",
    "KineticsWarning", "compile_model", "warm_up", "__version__",
]
