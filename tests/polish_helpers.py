"""A small two-condition fit with declared units, shared by tests/test_figures.py and
tests/test_conventions.py: a bolus cleared at k_el (control) or at k_el * kd (knock-down),
measured as conc = plasma / V in particles/mL; fitted without multistart in about a second."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kinetics import Model, simulate
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import Condition, FitProblem

TRUE = {"k_el": 0.8, "V": 2.5, "kd": 0.4}
TIMES = np.array([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0])


def unit_model() -> Model:
    m = Model("clearance_units", time_unit="h")
    m.add_compartment("plasma", initial=0, unit="particles")
    m.add_parameter("k_el", 1.0, min=1e-3, max=100, unit="1/h")
    m.add_parameter("V", 2.0, min=0.1, max=10, unit="mL")
    m.add_flow("elimination", "k_el * plasma", source="plasma")
    m.add_observable("conc", "plasma / V", unit="particles/mL")
    return m


def two_condition_problem(seed=0, noise="proportional") -> FitProblem:
    model = unit_model()
    rng = np.random.default_rng(seed)
    dose = [{"compartment": "plasma", "amount": 100.0, "time": 0.0}]
    rows = []
    for condition, k in (("control", TRUE["k_el"]), ("knockdown", TRUE["k_el"] * TRUE["kd"])):
        conc = simulate(model, TIMES, parameters={"k_el": k, "V": TRUE["V"]}, doses=dose)["conc"]
        noisy = conc * (1 + 0.05 * rng.standard_normal(len(TIMES)))
        rows += [{"condition": condition, "time": t, "observable": "conc", "value": v} for t, v in zip(TIMES, noisy)]
    conditions = [Condition("control", doses=dose),
                  Condition("knockdown", doses=dose, overrides={"k_el": "k_el * kd"})]
    return FitProblem(model, pd.DataFrame(rows), ["k_el", "V", "kd"], conditions=conditions,
                      parameters={"kd": {"value": 0.7, "min": 0.01, "max": 10}}, noise=noise)


def two_condition_fit(profiles=True, noise="proportional"):
    return fit(two_condition_problem(noise=noise), multistart=1, profiles=profiles, progress=False, executor=None)
