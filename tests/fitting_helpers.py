"""Models, synthetic data and small utilities shared by the fitting tests
(tests/test_problem.py, tests/test_fit.py).

Every data set here is simulated with :func:`kinetics.simulate` at known true values plus
seeded Gaussian noise, so tests can check recovery against the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kinetics import Model, simulate

# --------------------------------------------------------------------------- models


def secretion_model(nonlinear: bool = True) -> Model:
    """Endosome -> MVB -> plasma with a constant source, degradation and clearance of P.

    ``nonlinear``: Michaelis-Menten clearance Vmax*P/(Km+P) (numerical path); otherwise
    first-order clearance k_cl*P (exact affine path)."""
    m = Model("secretion_mm" if nonlinear else "secretion_lin", time_unit="h")
    m.add_compartment("EE", initial=50, unit="particles")
    m.add_compartment("MVB", initial=0, unit="particles")
    m.add_compartment("P", initial=0, unit="particles")
    m.add_parameter("s_endo", 100.0, min=1, max=1e5, unit="particles/h")
    m.add_parameter("k_mat", 0.8, min=1e-3, max=100, unit="1/h")
    m.add_parameter("k_lys", 0.5, min=1e-3, max=100, unit="1/h")
    m.add_parameter("k_sec", 0.3, min=1e-3, max=100, unit="1/h")
    if nonlinear:
        m.add_parameter("Vmax", 60.0, min=1e-2, max=1e5, unit="particles/h")
        m.add_parameter("Km", 40.0, min=1e-2, max=1e5, unit="particles")
    else:
        m.add_parameter("k_cl", 1.2, min=1e-3, max=100, unit="1/h")
    m.add_flow("endocytosis", "s_endo", target="EE")
    m.add_flow("maturation", "k_mat * EE", source="EE", target="MVB")
    m.add_flow("degradation", "k_lys * MVB", source="MVB")
    m.add_flow("secretion", "k_sec * MVB", source="MVB", target="P")
    m.add_flow("clearance", "Vmax * P / (Km + P)" if nonlinear else "k_cl * P", source="P")
    m.add_observable("release", "k_sec * MVB", unit="particles/h")
    return m


def clearance_model() -> Model:
    """One-compartment plasma clearance after a bolus (affine, solved exactly): P decays at k_cl
    and the measured concentration is P / V."""
    m = Model("clearance_1c", time_unit="h")
    m.add_compartment("P", initial=0, unit="particles")
    m.add_parameter("k_cl", 0.7, min=1e-3, max=1e3, unit="1/h")
    m.add_parameter("V", 2.0, min=1e-2, max=1e3, unit="mL")
    m.add_flow("clearance", "k_cl * P", source="P")
    m.add_observable("conc", "P / V", unit="particles/mL")
    return m


def product_model() -> Model:
    """Clearance at rate a*b: a and b enter only as their product (non-identifiable)."""
    m = Model("product", time_unit="h")
    m.add_compartment("P", initial=0, unit="particles")
    m.add_parameter("a", 0.5, min=1e-2, max=1e2, unit="1/h")
    m.add_parameter("b", 2.0, min=1e-2, max=1e2, unit="1")
    m.add_parameter("V", 2.0, min=1e-2, max=1e3, unit="mL")
    m.add_flow("clearance", "a * b * P", source="P")
    m.add_observable("conc", "P / V", unit="particles/mL")
    return m


# --------------------------------------------------------------------------- data


def tidy(sim, observables, condition=None, times=None) -> pd.DataFrame:
    """Noise-free tidy rows (time, observable, value[, condition]) from a Simulation."""
    frames = []
    for name in observables:
        frame = pd.DataFrame({"time": sim.times, "observable": name, "value": sim[name]})
        if times is not None:
            frame = frame[np.isin(frame["time"], times)]
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    if condition is not None:
        out["condition"] = condition
    return out


def add_noise(frame, rng, rel=0.0, abs_=0.0, column="value") -> pd.DataFrame:
    """Gaussian noise with standard deviation sqrt(abs_^2 + rel^2 * value^2)."""
    out = frame.copy()
    sd = np.sqrt(abs_ ** 2 + (rel * out[column].to_numpy(float)) ** 2)
    out[column] = out[column].to_numpy(float) + sd * rng.standard_normal(len(out))
    return out


def clearance_data(seed, k_cl=0.7, V=2.0, dose=100.0, times=None, rel=0.10) -> pd.DataFrame:
    """Plasma concentration after a bolus, ~12 log-spaced times, proportional noise."""
    times = np.geomspace(0.1, 6.0, 12) if times is None else times
    m = clearance_model()
    sim = simulate(m, times, parameters={"k_cl": k_cl, "V": V}, doses=[{"compartment": "P", "amount": dose, "time": 0}])
    return add_noise(tidy(sim, ["conc"]), np.random.default_rng(seed), rel=rel)


# --------------------------------------------------------------------------- numerics


def central_jacobian(fun, x, h=1e-6):
    """Central finite differences of a vector function, step h * max(1, |x_k|)."""
    x = np.asarray(x, dtype=float)
    f0 = np.asarray(fun(x))
    J = np.empty((len(f0), len(x)))
    for k in range(len(x)):
        step = h * max(1.0, abs(x[k]))
        xp, xm = x.copy(), x.copy()
        xp[k] += step
        xm[k] -= step
        J[:, k] = (np.asarray(fun(xp)) - np.asarray(fun(xm))) / (2 * step)
    return J


def gaussian_loglik(residual, sigma):
    """sum_i log N(residual_i; 0, sigma_i^2), written out."""
    residual = np.asarray(residual, dtype=float)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), residual.shape)
    return float(np.sum(-0.5 * np.log(2 * math.pi * sigma ** 2) - 0.5 * (residual / sigma) ** 2))


# --------------------------------------------------------------------------- problems

#: True values of the fit-level parameters in :func:`multi_condition_problem`.
MULTI_TRUTH = {"kd": 0.4, "gain": 1.5, "off": 2.0}


def multi_condition_problem(nonlinear=True, log_scale=True, seed=3):
    """A FitProblem exercising every feature the residuals and Jacobian go through.

    Four conditions of :func:`secretion_model` at 8 times, P, MVB and the ``release``
    observable measured with 5 % proportional noise:

    * ``control``;
    * ``knockdown``: override ``k_sec = "k_sec * kd"`` with the new fit-level parameter kd;
    * ``bolus``: 80 particles into P at t = 2, and an initial MVB that is an expression of
      a free parameter (``k_sec * 100``);
    * ``switch``: an event at t = 3 halving k_mat and doubling k_sec;

    observable maps ``P`` scaled by the fit-level ``gain`` and ``MVB`` shifted by ``off``.
    Free: k_mat, k_sec (log10), k_lys (linear: min 0), kd (log10), gain (linear: min -10),
    off (linear, unbounded) and Vmax, Km (log10; nonlinear) or k_cl (log10; affine).
    """
    from kinetics.fitting.problem import Condition, FitProblem

    m = secretion_model(nonlinear)
    rng = np.random.default_rng(seed)
    times = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
    conditions = [
        Condition("control"),
        Condition("knockdown", overrides={"k_sec": "k_sec * kd"}),
        Condition("bolus", doses=[{"compartment": "P", "amount": 80.0, "time": 2.0}], initial={"MVB": "k_sec * 100"}),
        Condition("switch", events=[{"time": 3.0, "set": {"k_mat": "k_mat * 0.5", "k_sec": "k_sec * 2"}}]),
    ]
    frames = []
    for c in conditions:
        values = m.parameter_values()
        if c.name == "knockdown":
            values["k_sec"] *= MULTI_TRUTH["kd"]
        sim = simulate(m, times, parameters=values, doses=c.doses, events=c.events, initial=c.initial)
        frame = tidy(sim, ["P", "MVB", "release"], condition=c.name)
        frame.loc[frame.observable == "P", "value"] *= MULTI_TRUTH["gain"]
        frame.loc[frame.observable == "MVB", "value"] += MULTI_TRUTH["off"]
        frames.append(add_noise(frame, rng, rel=0.05))
    data = pd.concat(frames, ignore_index=True)
    free = ["k_mat", "k_sec", "k_lys", "kd", "gain", "off"] + (["Vmax", "Km"] if nonlinear else ["k_cl"])
    parameters = {"kd": {"value": 0.6, "min": 1e-3, "max": 10}, "gain": {"value": 1.2, "min": -10, "max": 10},
                  "off": {"value": 1.0}, "k_lys": {"min": 0.0}, "k_mat": {"value": 0.5}, "k_sec": {"value": 0.5}}
    return FitProblem(m, data, free, conditions=conditions, parameters=parameters, noise="proportional",
                      log_scale=log_scale, observables={"P": {"scale": "gain"}, "MVB": {"offset": "off"}})


#: True values in :func:`knockdown_problem`.
KNOCKDOWN_TRUTH = {"k_mat": 0.8, "k_sec": 0.3, "k_cl": 1.2, "kd": 0.35}


def knockdown_problem(seed=11, rel=0.10):
    """Control and knock-down cultures of the affine :func:`secretion_model`: the knock-down
    scales secretion by kd (override ``k_sec = "k_sec * kd"``). P and the release rate are
    measured at 10 log-spaced times with ``rel`` proportional noise; free k_mat, k_sec, k_cl, kd."""
    from kinetics.fitting.problem import Condition, FitProblem

    m = secretion_model(nonlinear=False)
    times = np.geomspace(0.25, 24.0, 10)
    rng = np.random.default_rng(seed)
    frames = []
    for name, factor in (("control", 1.0), ("knockdown", KNOCKDOWN_TRUTH["kd"])):
        values = {**m.parameter_values(), "k_mat": KNOCKDOWN_TRUTH["k_mat"], "k_cl": KNOCKDOWN_TRUTH["k_cl"],
                  "k_sec": KNOCKDOWN_TRUTH["k_sec"] * factor}
        sim = simulate(m, times, parameters=values)
        frames.append(add_noise(tidy(sim, ["P", "release"], condition=name), rng, rel=rel))
    data = pd.concat(frames, ignore_index=True)
    conditions = [Condition("control"), Condition("knockdown", overrides={"k_sec": "k_sec * kd"})]
    parameters = {"kd": {"value": 1.0, "min": 1e-3, "max": 10}, "k_mat": {"value": 0.3},
                  "k_sec": {"value": 0.1}, "k_cl": {"value": 3.0}}
    return FitProblem(m, data, ["k_mat", "k_sec", "k_cl", "kd"], conditions=conditions, parameters=parameters,
                      noise="proportional")


# --------------------------------------------------------------------------- coverage

COVERAGE_TRUTH = {"k_cl": 0.7, "V": 2.0}
COVERAGE_TIMES = np.geomspace(0.1, 6.0, 12)


def coverage_replicate(seed):
    """One replicate of the coverage design: a 100-particle bolus into plasma, the
    concentration measured in duplicate at 12 log-spaced times (0.1 to 6 h, about 6
    half-lives) with 10 % proportional noise; k_cl and V fitted from a start off by 2-3x
    (one start). Returns {name: (lower, upper, identifiable, estimate)}.

    Module-level so that a process pool can run it."""
    import warnings

    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import Condition, FitProblem

    m = clearance_model()
    doses = [{"compartment": "P", "amount": 100.0, "time": 0.0}]
    sim = simulate(m, COVERAGE_TIMES, parameters=COVERAGE_TRUTH, doses=doses)
    clean = pd.concat([tidy(sim, ["conc"])] * 2, ignore_index=True)
    data = add_noise(clean, np.random.default_rng(1000 + seed), rel=0.10)
    problem = FitProblem(m, data, ["k_cl", "V"], conditions=[Condition("iv", doses=doses)], noise="proportional",
                         parameters={"k_cl": {"value": 0.3}, "V": {"value": 5.0}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # a warning in a replicate is a test failure
        result = fit(problem, multistart=1, executor=None, progress=False)
    return {n: (*result.ci95[n], result.identifiable[n], float(result.values[result.problem.free.index(n)]))
            for n in problem.free}


# --------------------------------------------------------------------------- fit folders

CLEARANCE_MODEL_TOML = """\
name = "clearance_1c"
description = "One-compartment plasma clearance (test model)"
time_unit = "h"

[compartments]
P = { initial = 0, unit = "particles" }

[parameters]
k_cl = { value = 0.7, unit = "1/h", min = 1e-3, max = 1e3 }
V    = { value = 2.0, unit = "mL", min = 1e-2, max = 1e3 }

[flows]
clearance = { from = "P", rate = "k_cl * P" }

[observables]
conc = { expr = "P / V", unit = "particles/mL" }
"""

CLEARANCE_FIT_TOML = """\
model = "model.toml"
data = "data.csv"

[fit]
free = ["k_cl", "V", "kd"]
noise = "proportional"
multistart = 3
seed = 0

[parameters]
kd = { value = 1.0, min = 0.01, max = 100 }
k_cl = { value = 0.3 }

[conditions.control]
doses = [ { compartment = "P", amount = 100, time = 0 } ]

[conditions.knockdown]
doses = [ { compartment = "P", amount = 100, time = 0 } ]
overrides = { k_cl = "k_cl * kd" }
"""


def write_clearance_case(folder, fit_text=CLEARANCE_FIT_TOML, model_text=CLEARANCE_MODEL_TOML, seed=5):
    """A fit folder (model.toml, data.csv, fit.toml): control and knock-down (clearance x 0.5)
    after a bolus, 8 times each, 10 % proportional noise. Returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.toml").write_text(model_text, encoding="utf-8")
    (folder / "fit.toml").write_text(fit_text, encoding="utf-8")
    rng = np.random.default_rng(seed)
    m = clearance_model()
    times = np.geomspace(0.1, 6.0, 8)
    frames = []
    for name, k_cl in (("control", 0.7), ("knockdown", 0.35)):
        sim = simulate(m, times, parameters={"k_cl": k_cl, "V": 2.0},
                       doses=[{"compartment": "P", "amount": 100.0, "time": 0}])
        frames.append(add_noise(tidy(sim, ["conc"], condition=name), rng, rel=0.10))
    pd.concat(frames, ignore_index=True).to_csv(folder / "data.csv", index=False, float_format="%.8g")
    return folder


def variant_of(text, old, new):
    """``text`` with the single occurrence of ``old`` replaced (a test bug if not exactly one)."""
    count = text.count(old)
    assert count == 1, f"test bug: {old!r} occurs {count} times"
    return text.replace(old, new)
