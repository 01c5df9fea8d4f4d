"""Simulation: a model made numerical and run over time.

:mod:`.compiled` (:class:`CompiledModel`, built once per model by :func:`compile_model`:
the exact affine path or the compiled Rosenbrock integrator, with sensitivities) and
:mod:`.schedule` (doses, infusions, events, :class:`Schedule`, :class:`Simulation` and
:func:`simulate`). ``simulate_many`` will join here.
"""

from .compiled import CompiledModel
from .schedule import Dose, Event, Infusion, Schedule, Simulation, simulate

__all__ = ["CompiledModel", "Dose", "Event", "Infusion", "Schedule", "Simulation", "simulate"]
