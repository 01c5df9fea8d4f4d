"""Simulation: a model made numerical and run over time.

:mod:`.compiled` (:class:`CompiledModel`, built once per model by :func:`compile_model`:
the exact affine path or the compiled Rosenbrock integrator, with sensitivities) and
:mod:`.schedule` (doses, infusions, events, :class:`Schedule`, :class:`Simulation` and
:func:`simulate`) and :mod:`.ensemble` (:func:`simulate_many`: many parameter sets at once, an
:class:`Ensemble`).
"""

from .compiled import CompiledModel
from .schedule import Dose, Event, Infusion, Schedule, Simulation, simulate
from .ensemble import Ensemble, simulate_many

__all__ = ["CompiledModel", "Dose", "Event", "Infusion", "Schedule", "Simulation", "simulate", "Ensemble", "simulate_many"]
