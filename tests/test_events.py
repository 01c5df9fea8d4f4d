"""Triggered events (kinetics.simulation.events): exact sensitivities through events by the jump
conditions, checked against closed forms and central finite differences of the simulation; the
exact affine solution between state-triggered events, checked against closed forms and scipy's
Radau at rtol 1e-12; the watch grid of the exact path; a fit of receptor_uptake through its
desensitization event."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics import Model, simulate
from kinetics.simulation.events import sample_offsets
from kinetics.simulation.schedule import Schedule

from conftest import MODELS_DIR, radau

# A' = -k A from A0; when A falls below thr it is reset to A0. With tau = ln(A0 / thr) / k and
# n(t) = floor(t / tau) firings so far, A = A0 exp(-k (t - n tau)), so that
# dA/dk = -t A, dA/dthr = -n A / thr, dA/dA0 = (1 + n) A / A0.
REFILL = {
    "compartments": {"A": {"initial": "A0"}},
    "parameters": {"A0": 10.0, "k": 0.8, "thr": 2.0},
    "flows": {"out": {"from": "A", "rate": "k * A"}},
    "events": {"refill": {"trigger": "A < thr", "assign": {"A": "A0"}}},
}

# two pools, a state trigger with a parameter threshold that fires whenever B falls below it
# (three times), assigning a state (with a parameter) and a parameter; an observable that reads
# the changed parameter
TWO_POOLS = {
    "compartments": {"A": {"initial": 10}, "B": {"initial": 0}},
    "parameters": {"k1": 0.9, "k2": 0.4, "thr": 3.0, "add": 5.0, "q": 0.5},
    "flows": {"ab": {"from": "A", "to": "B", "rate": "k1 * A"}, "out": {"from": "B", "rate": "k2 * B"}},
    "events": {"spill": {"trigger": "B < thr", "assign": {"A": "A + add", "k1": "k1 * q"}}},
    "observables": {"flux": {"expr": "k1 * A"}, "total": {"expr": "A + B"}},
}

# a trigger on time with a parameter time (computed crossing: dtau/dt_on = 1)
SWITCH = {
    "compartments": {"A": {"initial": 0}},
    "parameters": {"s": 2.0, "k": 0.5, "t_on": 1.5, "q": 3.0},
    "flows": {"feed": {"to": "A", "rate": "s"}, "out": {"from": "A", "rate": "k * A"}},
    "events": {"boost": {"trigger": "t >= t_on", "assign": {"s": "s * q"}}},
}

# periodic doses: an assignment reading the time (last = t), firing several times
PERIODIC = {
    "compartments": {"A": {"initial": 0}},
    "parameters": {"dose": 5.0, "period": 2.5, "last": 0.0, "k": 0.3},
    "flows": {"out": {"from": "A", "rate": "k * A"}},
    "events": {"redose": {"trigger": "t - last >= period", "assign": {"A": "A + dose", "last": "t"}}},
}

# nonlinear (the integrator's path): logistic growth, harvested whenever it exceeds cap
HARVEST = {
    "compartments": {"N": {"initial": 1}},
    "parameters": {"r": 1.2, "K": 10.0, "cap": 6.0, "f": 0.4},
    "reactions": {"growth": {"reactants": [], "products": ["N"], "rate": "r * N * (1 - N / K)"}},
    "events": {"harvest": {"trigger": "N > cap", "assign": {"N": "N * f"}}},
}

# a cascade: 'first' makes the trigger of 'second' true at the same instant
CASCADE = {
    "compartments": {"A": {"initial": 10}, "B": {"initial": 0}},
    "parameters": {"k": 0.5, "thr": 4.0, "c": 3.0},
    "flows": {"out": {"from": "A", "rate": "k * A"}},
    "events": {"first": {"trigger": "A < thr", "assign": {"B": "B + 1"}},
               "second": {"trigger": "B > 0.5", "assign": {"A": "A + c * B", "B": "0"}}},
}


def fired_times(model, times, parameters=None, **options):
    compiled = kinetics.compile_model(model)
    schedule = Schedule(compiled, times, **options)
    schedule.run(compiled.parameter_vector(parameters))
    return schedule.fired


def differences(model, times, names, method="auto", rel_step=1e-5, **options):
    """Central differences of states and observables along each parameter: {name: (dX, dY)},
    simulated at rtol 1e-12."""
    compiled = kinetics.compile_model(model)
    values = dict(zip(compiled.parameter_names, compiled.default_parameters))
    out = {}
    for name in names:
        h = rel_step * max(abs(values[name]), 1e-2)
        up, down = (simulate(model, times, parameters={name: values[name] + s * h}, rtol=1e-12, atol=1e-12,
                             method=method, **options) for s in (1, -1))
        out[name] = ((up.states - down.states) / (2 * h), (up.observables - down.observables) / (2 * h))
    return out


def worst_disagreement(model, times, names, method="auto", **options):
    """Largest |exact - difference| over all output times, relative to each series' largest
    |difference|, of the sensitivities of a simulation at rtol 1e-10."""
    sim = simulate(model, times, sensitivities=names, rtol=1e-10, atol=1e-12, method=method, **options)
    worst = 0.0
    for k, (name, (dX, dY)) in enumerate(differences(model, times, names, method, **options).items()):
        for exact, fd in ((sim.sensitivities[..., k], dX), (sim.observable_sensitivities[..., k], dY)):
            scale = np.maximum(np.abs(fd).max(axis=0), 1e-9)
            worst = max(worst, float((np.abs(exact - fd) / scale).max(initial=0.0)))
    return worst


# ----------------------------------------------------------- sensitivities through events
@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_sensitivities_through_a_refill_event_match_the_closed_form(method):
    m = Model.from_dict(REFILL)
    t = np.linspace(0.1, 9.9, 50)      # no output time at an event time (2.01, 4.02, 6.04, 8.05)
    sim = simulate(m, t, sensitivities=["k", "thr", "A0"], rtol=1e-10, atol=1e-12, method=method)
    tau = math.log(10 / 2) / 0.8
    n = np.floor(t / tau)
    A = 10 * np.exp(-0.8 * (t - n * tau))
    assert [name for _, name in fired_times(m, t)] == ["refill"] * 4
    tol = 1e-11 if method == "auto" else 1e-7     # exact solution, or the integrator at rtol 1e-10
    np.testing.assert_allclose(sim["A"], A, rtol=tol)
    np.testing.assert_allclose(sim.sensitivity("A", "k"), -t * A, rtol=tol, atol=tol * 100)
    np.testing.assert_allclose(sim.sensitivity("A", "thr"), -n * A / 2, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(sim.sensitivity("A", "A0"), (1 + n) * A / 10, rtol=tol)


FD_CASES = {
    # id: (model, parameters, method, schedule options, tolerance)
    "state-trigger-fires-twice": (TWO_POOLS, "k1 k2 thr add q", "auto", {}, 1e-7),
    "state-trigger-integrated": (TWO_POOLS, "k1 thr add q", "numerical", {}, 1e-6),
    "with-dose-and-fixed-time-change": (TWO_POOLS, "k1 k2 thr q", "auto",
                                        {"doses": [{"compartment": "A", "amount": 4.0, "time": 3.0}],
                                         "events": [{"time": 4.0, "set": {"k2": "k2 * 2"}}]}, 1e-7),
    "time-trigger-at-a-parameter-time": (SWITCH, "s k t_on q", "auto", {}, 1e-7),
    "assignment-reads-time-periodic": (PERIODIC, "dose period k", "auto", {}, 1e-7),
    "nonlinear-integrated": (HARVEST, "r K cap f", "auto", {}, 1e-6),
    "cascade-at-one-instant": (CASCADE, "k thr c", "auto", {}, 1e-7),
}


@pytest.mark.parametrize("case", list(FD_CASES))
def test_sensitivities_match_finite_differences(case):
    model, names, method, options, tolerance = FD_CASES[case]
    m = Model.from_dict(model)
    t = np.linspace(0, 12, 37) + 0.05
    assert len(fired_times(m, t, **options)) >= (1 if model is SWITCH else 2)   # the events do fire
    assert worst_disagreement(m, t, names.split(), method, **options) <= tolerance


def test_receptor_uptake_sensitivities_match_finite_differences():
    # the bundled model: bimolecular binding, a trigger on an assignment (bound fraction) with a
    # parameter threshold, an event assigning a parameter (k_on), a computed parameter (R0)
    m = kinetics.load_model(MODELS_DIR / "receptor_uptake.toml")
    t = np.linspace(0, 12, 13)
    assert [name for _, name in fired_times(m, t)] == ["desensitize"]
    assert worst_disagreement(m, t, ["k_on", "f_desens", "q_desens", "s_R"]) <= 1e-6


def test_without_the_compiled_integrator_scipy_radau_gives_the_same_run(monkeypatch):
    # no numba (or a trigger the tapes cannot hold): the runner steps scipy's Radau instead
    from kinetics.simulation.events import EventRunner
    m = Model.from_dict(HARVEST)
    t = np.linspace(0, 6, 13)
    compiled = simulate(m, t, sensitivities=["r", "cap"], rtol=1e-9, atol=1e-11)
    fired = fired_times(m, t)
    monkeypatch.setattr(EventRunner, "_watch_tape", lambda self: None)
    radau_run = simulate(m, t, sensitivities=["r", "cap"], rtol=1e-9, atol=1e-11)
    assert [name for _, name in fired_times(m, t)] == [name for _, name in fired] and len(fired) >= 2
    np.testing.assert_allclose([time for time, _ in fired_times(m, t)], [time for time, _ in fired], rtol=1e-7)
    np.testing.assert_allclose(radau_run.states, compiled.states, rtol=1e-6)
    np.testing.assert_allclose(radau_run.sensitivities, compiled.sensitivities, rtol=1e-5, atol=1e-8)


# ------------------------------------------------ exact solution between state-triggered events
def test_one_pool_decay_crosses_its_threshold_at_the_exact_time():
    m = Model.from_dict(REFILL)
    assert kinetics.compile_model(m).method == "exact"
    t = np.linspace(0, 9.9, 100)
    fired = fired_times(m, t)
    tau = math.log(10 / 2) / 0.8
    np.testing.assert_allclose([time for time, _ in fired], tau * np.arange(1, 5), rtol=1e-14)
    np.testing.assert_allclose(simulate(m, t)["A"], 10 * np.exp(-0.8 * (t % tau)), rtol=1e-13)


def test_affine_events_match_the_radau_reference():
    # a damped oscillation (complex eigenvalues) whose troughs dip below the threshold: an event
    # lifts X by 0.3 and halves the damping parameter, several times
    m = Model.from_dict({
        "compartments": {"X": {"initial": 1}, "V": {"initial": 0}},
        "parameters": {"w": 6.0, "c": 0.5, "thr": -0.58},
        "flows": {"x_up": {"to": "X", "rate": "V"}, "v_up": {"to": "V", "rate": "-w**2 * X - c * V"}},
        "events": {"kick": {"trigger": "X < thr", "assign": {"X": "X + 0.3", "c": "c / 2"}}},
    })
    t = np.linspace(0, 1.5, 31)
    sim = simulate(m, t)
    assert sim.method == "exact"
    state = {"c": 0.5}

    def rhs(_, y):
        return [y[1], -36 * y[0] - state["c"] * y[1]]

    def kick(_, y):
        state["c"] /= 2
        return [y[0] + 0.3, y[1]]
    ref = radau(rhs, [1, 0], t, events=[(lambda _, y: -0.58 - y[0], kick)])
    np.testing.assert_allclose(sim.states, ref, rtol=1e-8, atol=1e-9)
    assert len(fired_times(m, t)) >= 2
    # the integrator's path (scipy Radau stepped by the event runner) agrees
    numerical = simulate(m, t, method="numerical", rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(numerical.states, sim.states, rtol=1e-7, atol=1e-8)


def test_sample_offsets_resolve_every_mode_while_it_matters():
    A = np.array([[-1000.0, 0.0], [1000.0, -1.0]])
    grid = sample_offsets(A, 100.0)
    assert grid[0] == 0 and grid[-1] == 100.0 and np.all(np.diff(grid) > 0)
    steps = np.diff(grid)
    assert steps[grid[:-1] < 40 / 1000].max() <= 0.25 / 1000 * (1 + 1e-12)   # the fast mode for 40 of its time scales
    assert steps[(grid[:-1] >= 0.04) & (grid[:-1] < 40)].max() <= 0.25 * (1 + 1e-12)
    assert steps.max() <= 100 / 32 * (1 + 1e-12)
    # an undamped oscillation is watched over the whole span; a zero matrix gets the even points
    oscillation = sample_offsets(np.array([[0.0, 5.0], [-5.0, 0.0]]), 10.0)
    assert np.diff(oscillation).max() <= 0.05 * (1 + 1e-12)
    np.testing.assert_allclose(sample_offsets(np.zeros((2, 2)), 3.2), np.linspace(0, 3.2, 33))
    assert sample_offsets(np.array([[0.0, 1e6], [-1e6, 0.0]]), 1e3) is None   # too many: integrate instead


# ------------------------------------------------------------------------------ fitting
def test_fit_of_receptor_uptake_through_its_desensitization_recovers_the_parameters():
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import FitProblem
    m = kinetics.load_model(MODELS_DIR / "receptor_uptake.toml")
    truth = {"k_on": 3e-4, "k_int": 0.8, "k_rec": 0.5}
    times = np.linspace(0.25, 12, 24)
    sim = simulate(m, times, parameters=truth)
    assert fired_times(m, times, truth)   # desensitization happens in the data
    observables = ["medium_conc", "cell_uptake", "occupancy"]
    data = pd.DataFrame({"time": np.tile(times, 3), "observable": np.repeat(observables, len(times)),
                         "value": np.concatenate([sim[name] for name in observables])})
    problem = FitProblem(m, data, list(truth), noise="proportional")
    result = fit(problem, multistart=1, profiles=False, progress=False)
    np.testing.assert_allclose(result.values, list(truth.values()), rtol=1e-4)


@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_a_given_start_state_feeds_the_triggers_and_the_sensitivities(method):
    """A pre-equilibrated start (x0, S0) replaces the initial state of a model with triggered
    events: the same run as a model whose initial value is that state, sensitivities included."""
    scaled = {**REFILL, "compartments": {"A": {"initial": "0.7 * A0"}}}
    times = np.linspace(0.1, 9.9, 25)
    runs = []
    for model, start in ((REFILL, True), (scaled, False)):
        compiled = kinetics.compile_model(Model.from_dict(model))
        p = compiled.parameter_vector(None)
        D = np.eye(len(p))
        schedule = Schedule(compiled, times)
        given = None
        if start:   # x0 = 0.7 A0 with dx0/dA0 = 0.7 along the identity directions
            S0 = np.zeros((1, len(p)))
            S0[0, compiled.parameter_names.index("A0")] = 0.7
            given = (np.array([7.0]), S0)
        X, Y, S, _ = schedule.run(p, D, rtol=1e-10, atol=1e-12, method=method, start=given)
        runs.append((X, S, [name for _, name in schedule.fired]))
    (X1, S1, fired1), (X2, S2, fired2) = runs
    assert fired1 == fired2 and len(fired1) >= 3
    np.testing.assert_allclose(X1, X2, rtol=1e-12)
    np.testing.assert_allclose(S1, S2, rtol=1e-9, atol=1e-12)
    assert abs(X1[0, 0] - 7.0 * math.exp(-0.8 * 0.1)) < 1e-9
