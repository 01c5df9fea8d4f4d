"""Moved to :mod:`kinetics.analysis.steady`; this old import path stays as a re-export."""

from .analysis.steady import SteadyPlan, SteadyState, compare_scenarios, steady_plan, steady_state

__all__ = ["steady_state", "SteadyState", "compare_scenarios", "steady_plan", "SteadyPlan"]
