"""The general model form (DESIGN.md "The general form"): reactions with stoichiometry, boundary
pools, volumes, parameter and initial values as expressions, assignments, rate rules and
triggered events, checked against hand-written ODEs integrated by scipy's Radau at rtol 1e-12
with scipy's own event location."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import kinetics
import numpy as np
import pandas as pd
import pytest

from kinetics import KineticsWarning, Model, ModelError, SolverError, load_model, simulate
from kinetics.model.symbolic import SymbolicSystem

from conftest import REPO, radau, write_model

def close(a, b, rtol=1e-6, atol=1e-9):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------ reactions
def test_bimolecular_binding_matches_reference():
    m = Model("binding")
    m.add_compartment("EV", 5000)
    m.add_compartment("R", 1000)
    m.add_compartment("C", 0)
    m.add_parameter("k_on", 1e-4)
    m.add_parameter("k_off", 0.2)
    m.add_reaction("binding", "k_on * EV * R", reactants=["EV", "R"], products=["C"])
    m.add_reaction("unbinding", "k_off * C", reactants={"C": 1}, products={"EV": 1, "R": 1})
    t = np.linspace(0, 10, 21)
    sim = simulate(m, t)

    def rhs(_, y):
        ev, r, c = y
        v = 1e-4 * ev * r - 0.2 * c
        return [-v, -v, v]
    close(sim.states, radau(rhs, [5000, 1000, 0], t))
    assert sim.method == "numerical"


def test_non_unit_stoichiometry_matches_reference():
    # one MVB membrane unit gives 4 vesicles; two monomers dimerise; a non-integer yield
    m = Model.from_dict({
        "compartments": {"M": {"initial": 50}, "V": {}, "A": {"initial": 10}, "B": {}, "W": {}},
        "parameters": {"k_b": 0.3, "k_d": 0.05, "k_w": 0.1},
        "reactions": {"budding": {"reactants": {"M": 1}, "products": {"V": 4}, "rate": "k_b * M"},
                      "dimer": {"reactants": {"A": 2}, "products": "B", "rate": "k_d * A**2"},
                      "waste": {"reactants": ["V"], "products": {"W": 2.5}, "rate": "k_w * V"}},
    })
    t = np.linspace(0, 20, 11)
    sim = simulate(m, t)

    def rhs(_, y):
        M, V, A, B, W = y
        vb, vd, vw = 0.3 * M, 0.05 * A ** 2, 0.1 * V
        return [-vb, 4 * vb - vw, -2 * vd, vd, 2.5 * vw]
    close(sim.states, radau(rhs, [50, 0, 10, 0, 0], t))
    assert m.symbolic().reactions["dimer"].net == {"A": -2, "B": 1}


def test_a_network_affine_in_the_pools_is_solved_exactly():
    # assignments substituted first: the network is affine, so the exact path applies
    m = Model.from_dict({
        "compartments": {"I": {"initial": 100}, "cargo": {}},
        "parameters": {"k_rel": 0.4, "V": 2.0},
        "assignments": {"conc": "I / V", "release": "k_rel * V * conc"},
        "reactions": {"cargo_release": {"reactants": {"I": 1}, "products": {"cargo": 4}, "rate": "release"}},
        "observables": {"concentration": {"expr": "conc"}},
    })
    c = kinetics.compile_model(m)
    assert c.affine and c.method == "exact"
    t = np.linspace(0, 5, 6)
    exact = simulate(m, t, sensitivities=["k_rel"])
    numeric = simulate(m, t, method="numerical", rtol=1e-12, atol=1e-12)
    close(exact.states, numeric.states, rtol=1e-9)
    close(exact["cargo"], 4 * 100 * (1 - np.exp(-0.4 * t)), rtol=1e-12)
    close(exact.sensitivity("cargo", "k_rel"), 400 * t * np.exp(-0.4 * t), rtol=1e-10, atol=1e-10)


def test_boundary_pool_is_held_by_reactions_but_events_change_it():
    m = Model.from_dict({
        "compartments": {"L": {"initial": 5, "boundary": True}, "X": {}},
        "parameters": {"k": 0.5, "kd": 1.0},
        "reactions": {"make": {"reactants": ["L"], "products": ["X"], "rate": "k * L"},
                      "loss": {"reactants": ["X"], "rate": "kd * X"}},
        "events": {"wash": {"trigger": "t >= 3", "assign": {"L": "0"}}},
    })
    t = np.linspace(0, 6, 13)
    sim = simulate(m, t)

    def rhs(_, y):
        L, X = y
        return [0.0, 0.5 * L - X]
    ref = radau(rhs, [5, 0], t, breaks=[(3.0, lambda _, y: [0.0, y[1]])])
    close(sim.states, ref)
    assert (sim["L"][t < 3] == 5).all() and (sim["L"][t >= 3] == 0).all()


# ------------------------------------------------------------ values, assignments, rules
def test_initial_and_parameter_value_expressions():
    m = Model.from_dict({
        "compartments": {"A": {"initial": "dose0 * 0.5"}, "B": {}},
        "parameters": {"dose0": 200.0, "k1": 0.3, "k2": {"value": "2 * k1"}, "k3": {"value": "k2 + k1"}},
        "flows": {"ab": {"from": "A", "to": "B", "rate": "k2 * A"}, "out": {"from": "B", "rate": "k3 * B"}},
    })
    assert m.parameter_values()["k3"] == pytest.approx(0.9)
    t = np.linspace(0, 4, 9)
    sim = simulate(m, t, parameters={"k1": 0.1, "dose0": 100}, sensitivities=["k1", "dose0"])

    def rhs(_, y):
        return [-0.2 * y[0], 0.2 * y[0] - 0.3 * y[1]]
    close(sim.states, radau(rhs, [50, 0], t))
    # k2 and k3 follow k1 in the sensitivities too (chain rule through the value expressions)
    h = 1e-6
    up = simulate(m, t, parameters={"k1": 0.1 + h, "dose0": 100}).states
    down = simulate(m, t, parameters={"k1": 0.1 - h, "dose0": 100}).states
    close(sim.sensitivity("B", "k1"), (up - down)[:, 1] / (2 * h), rtol=1e-6, atol=1e-7)
    close(sim.sensitivity("A", "dose0"), 0.5 * np.exp(-0.2 * t), rtol=1e-10)
    with pytest.raises(ModelError, match="'k2' is computed from its value expression"):
        simulate(m, t, parameters={"k2": 5.0})


def test_chained_assignments_in_any_order_match_reference():
    m = Model.from_dict({
        "compartments": {"EV": {"initial": 1000, "volume": "V"}, "U": {}},
        "parameters": {"V": 2.0, "k": 0.01, "Km": 100.0},
        "assignments": {"uptake": "k * V * sat", "sat": "conc / (Km + conc) * conc", "conc": "EV / V"},
        "reactions": {"take": {"reactants": ["EV"], "products": ["U"], "rate": "uptake"}},
        "observables": {"concentration": {"expr": "conc"}},
    })
    sym = m.symbolic()
    assert isinstance(sym, SymbolicSystem)
    assert list(sym.assignments) == ["conc", "sat", "uptake"]  # dependency order
    t = np.linspace(0, 50, 11)
    sim = simulate(m, t)

    def rhs(_, y):
        c = y[0] / 2.0
        v = 0.01 * 2.0 * c / (100 + c) * c
        return [-v, v]
    ref = radau(rhs, [1000, 0], t)
    close(sim.states, ref)
    close(sim["concentration"], ref[:, 0] / 2)


def test_rate_rule_parameter_moves_in_time():
    m = Model.from_dict({
        "compartments": {"A": {"initial": 100}},
        "parameters": {"k_up": 1.0, "k_tol": 0.3},
        "rates": {"k_up": "-k_tol * k_up"},
        "flows": {"uptake": {"from": "A", "rate": "k_up * A"}},
    })
    sym = m.symbolic()
    assert sym.state_names == ["A", "k_up"] and sym.parameter_names == ["k_tol"]
    t = np.linspace(0, 10, 11)
    sim = simulate(m, t)

    def rhs(_, y):
        return [-y[1] * y[0], -0.3 * y[1]]
    close(sim.states, radau(rhs, [100, 1.0], t))
    # analytic: ln A = ln 100 - (1 - exp(-0.3 t)) / 0.3
    close(sim["A"], 100 * np.exp(-(1 - np.exp(-0.3 * t)) / 0.3), rtol=1e-6)


# ------------------------------------------------------------------------------ events
def test_event_fires_several_times():
    m = Model.from_dict({
        "compartments": {"A": {"initial": 10}},
        "parameters": {"k": 1.0},
        "flows": {"out": {"from": "A", "rate": "k * A"}},
        "events": {"refill": {"trigger": "A < 2", "assign": {"A": "A + 8"}}},
    })
    t = np.linspace(0, 6, 25)
    schedule_sim = simulate(m, t)
    ref = radau(lambda _, y: [-y[0]], [10], t, events=[(lambda _, y: 2 - y[0], lambda _, y: [y[0] + 8])])
    close(schedule_sim.states, ref)
    close(schedule_sim["A"], 10 * np.exp(-(t % math.log(5))), rtol=1e-6)
    from kinetics.simulation.schedule import Schedule
    sch = Schedule(kinetics.compile_model(m), t)
    sch.run(kinetics.compile_model(m).default_parameters)
    assert [name for _, name in sch.fired] == ["refill"] * 3
    close([time for time, _ in sch.fired], [math.log(5) * i for i in (1, 2, 3)], rtol=1e-9)


def test_event_at_an_output_time_reports_the_value_after():
    m = Model.from_dict({
        "compartments": {"A": {"initial": 0}},
        "parameters": {"s": 1.0, "k": 0.5},
        "flows": {"feed": {"to": "A", "rate": "s"}, "out": {"from": "A", "rate": "k * A"}},
        "events": {"boost": {"trigger": "t >= 2", "assign": {"A": "A + 10", "s": "3 * s"}}},
    })
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    sim = simulate(m, t)
    state = {"s": 1.0}

    def rhs(_, y):
        return [state["s"] - 0.5 * y[0]]

    def boost(_, y):
        state["s"] = 3.0
        return [y[0] + 10]
    ref = radau(rhs, [0], t, breaks=[(2.0, boost)])
    close(sim.states, ref, rtol=1e-8)
    assert sim["A"][2] == pytest.approx(2 * (1 - math.exp(-1)) + 10, rel=1e-8)


def test_trigger_true_at_start_fires_only_with_fire_at_start():
    base = {
        "compartments": {"A": {"initial": 5}},
        "parameters": {"k": 0.1},
        "flows": {"out": {"from": "A", "rate": "k * A"}},
    }
    t = np.array([0.0, 1.0])
    quiet = Model.from_dict({**base, "events": {"e": {"trigger": "A > 1", "assign": {"A": "A + 100"}}}})
    assert simulate(quiet, t)["A"][0] == 5
    loud = Model.from_dict({**base, "events": {"e": {"trigger": "A > 1", "assign": {"A": "A + 100"}, "fire_at_start": True}}})
    assert simulate(loud, t)["A"][0] == 105


def test_simultaneous_events_fire_in_file_order_and_cascade():
    m = Model.from_dict({
        "compartments": {"A": {"initial": 0}, "B": {"initial": 0}},
        "parameters": {"s": 1.0},
        "flows": {"feed": {"to": "A", "rate": "s"}},
        "events": {"first": {"trigger": "t >= 1", "assign": {"B": "B + 1"}},
                   "second": {"trigger": "t >= 1", "assign": {"B": "B * 10"}},
                   "cascade": {"trigger": "B > 5", "assign": {"A": "100"}}},
    })
    sim = simulate(m, np.array([0.0, 1.0, 1.5]))
    assert sim["B"][1] == 10          # (0 + 1) * 10, not 0 * 10 + 1
    assert sim["A"][1] == 100 and sim["A"][2] == pytest.approx(100.5)


@pytest.mark.parametrize("persistent", [False, True])
def test_simultaneous_non_persistent_event_is_cancelled_when_the_first_undoes_its_trigger(persistent):
    # SBML test 00953 in small: two events share the trigger t - reset >= 1 and both set
    # reset = t. Every time unit the first (file order) fires; a non-persistent second is
    # cancelled because the first made its trigger false; a persistent one fires anyway.
    events = {name: {"trigger": "t - reset >= 1", "assign": {"reset": "t", name.upper(): f"{name.upper()} + 1"},
                     "persistent": persistent} for name in ("q", "r")}
    m = Model.from_dict({
        "compartments": {"A": {"initial": 0}},
        "parameters": {"Q": 0.0, "R": 0.0, "reset": 0.0},
        "observables": {"Qo": {"expr": "Q"}, "Ro": {"expr": "R"}},
        "events": events,
    })
    sim = simulate(m, np.array([0.0, 0.5, 1.5, 10.5]))
    assert list(sim["Qo"]) == [0, 0, 1, 10]
    assert list(sim["Ro"]) == ([0, 0, 1, 10] if persistent else [0, 0, 0, 0])


def test_trigger_on_a_state_with_a_constant_rate_fires_at_the_computed_time():
    # T rises at 2 per time unit, so T >= 3 holds from t = 1.5 exactly; A grows at rate s, which
    # the event raises from 1 to 5: A(t) = t before 1.5, 1.5 + 5 (t - 1.5) after.
    from kinetics.simulation.schedule import Schedule
    m = Model.from_dict({
        "compartments": {"T": {"initial": 0}, "A": {"initial": 0}},
        "parameters": {"s": 1.0},
        "flows": {"clock": {"to": "T", "rate": "2"}, "feed": {"to": "A", "rate": "s"}},
        "events": {"switch": {"trigger": "T >= 3", "assign": {"s": "5"}}},
    })
    t = np.array([0.0, 1.0, 1.5, 2.0, 3.0])
    sim = simulate(m, t)
    close(sim["A"], [0.0, 1.0, 1.5, 4.0, 9.0], rtol=1e-12)
    compiled = kinetics.compile_model(m)
    sch = Schedule(compiled, t)
    sch.run(compiled.default_parameters)
    assert sch.fired == [(1.5, "switch")]


def test_an_event_fires_while_another_events_assignment_cannot_be_evaluated():
    # all events' assignments are generated as one function; 'later' divides by Z = 0, which
    # must neither stop 'first' from firing nor pass as a number when 'later' fires
    base = {
        "compartments": {"A": {"initial": 0}},
        "parameters": {"X": 0.0, "Y": 0.0, "Z": 0.0},
        "observables": {"Xo": {"expr": "X"}, "Yo": {"expr": "Y"}},
        "events": {"first": {"trigger": "t >= 1", "assign": {"X": "X + 1"}},
                   "later": {"trigger": "t >= 2", "assign": {"Y": "1 / Z"}}},
    }
    sim = simulate(Model.from_dict(base), np.array([0.0, 1.5]))
    assert list(sim["Xo"]) == [0, 1]
    with pytest.raises(SolverError, match="event 'later' cannot be evaluated at t=2"):
        simulate(Model.from_dict(base), np.array([0.0, 3.0]))


def test_events_that_retrigger_each_other_forever_are_refused():
    m = Model.from_dict({
        "compartments": {"A": {"initial": 0}},
        "parameters": {"s": 1.0},
        "flows": {"feed": {"to": "A", "rate": "s"}},
        "events": {"up": {"trigger": "A > 1", "assign": {"A": "0"}},
                   "down": {"trigger": "A < 0.5", "assign": {"A": "2"}}},
    })
    with pytest.raises(SolverError, match="keep triggering each other"):
        simulate(m, np.array([0.0, 3.0]))


def test_sensitivity_through_a_triggered_event_matches_the_closed_form():
    m = Model.from_dict({
        "compartments": {"A": {"initial": 10}},
        "parameters": {"k": {"value": 1.0, "min": 0.1, "max": 10}},
        "flows": {"out": {"from": "A", "rate": "k * A"}},
        "events": {"refill": {"trigger": "A < 2", "assign": {"A": "A + 8"}}},
    })
    t = np.linspace(0, 6, 13)
    sim = simulate(m, t, sensitivities=["k"])
    # A = 10 exp(-k (t mod ln5/k)) so dA/dk = -t A wherever no refill happens exactly at t
    # (exact sensitivities through the refills: the event times move with k)
    close(sim.sensitivity("A", "k"), -t * sim["A"], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ files and the CLI
CLI_MODEL = """\
name = "general_demo"
time_unit = "h"

[compartments]
EV  = { initial = 5000, unit = "particles", volume = "V_med" }
R   = { initial = "R_total", unit = "particles" }
C   = { initial = 0, unit = "particles" }
I   = { initial = 0, unit = "particles" }
ILV = { initial = 0, unit = "particles" }

[parameters]
V_med   = { value = 2, unit = "mL", fixed = true }
R_total = { value = 1000, unit = "particles" }
k_on    = { value = 2e-4, unit = "mL/particles/h" }
k_int   = { value = 0.5, unit = "1/h" }
k_bud   = { value = 0.2, unit = "1/h" }

[assignments]
ev_conc = { expr = "EV / V_med", unit = "particles/mL" }
bound_fraction = "C / (R + C)"

[reactions]
binding     = { reactants = ["EV", "R"], products = ["C"], rate = "k_on * ev_conc * R" }
internalise = { reactants = ["C"], products = ["I", "R"], rate = "k_int * C" }
budding     = { reactants = { I = 1 }, products = { ILV = 3 }, rate = "k_bud * I" }

[events]
desensitize = { trigger = "bound_fraction > 0.3", assign = { k_on = "k_on * 0.5" } }
redose      = { trigger = "t >= 6", assign = { EV = "EV + 2000" } }

[observables]
bound = { expr = "bound_fraction" }
"""


def cli_reference(t):
    par = {"k_on": 2e-4}

    def rhs(_, y):
        ev, r, c, i, ilv = y
        vb = par["k_on"] * ev / 2 * r
        vi, vu = 0.5 * c, 0.2 * i
        return [-vb, -vb + vi, vb - vi, vi - vu, 3 * vu]

    def halve(_, y):
        par["k_on"] *= 0.5
        return y
    return radau(rhs, [5000, 1000, 0, 0, 0], t, events=[(lambda _, y: y[2] / (y[1] + y[2]) - 0.3, halve)],
                 breaks=[(6.0, lambda _, y: [y[0] + 2000, *y[1:]])])


def test_general_model_file_simulates_from_the_command_line(tmp_path):
    path = write_model(tmp_path, CLI_MODEL)
    out = tmp_path / "x.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "kinetics.cli", "simulate", str(path), "--t-end", "12",
                           "--points", "25", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    t = table["time"].to_numpy()
    ref = cli_reference(t)
    for j, name in enumerate(["EV", "R", "C", "I", "ILV"]):
        close(table[name].to_numpy(), ref[:, j], rtol=1e-6, atol=1e-6)
    close(table["bound"].to_numpy(), ref[:, 2] / (ref[:, 1] + ref[:, 2]), rtol=1e-6)


def test_general_model_round_trips_through_to_dict(tmp_path):
    m = load_model(write_model(tmp_path, CLI_MODEL))
    again = Model.from_dict(m.to_dict())
    t = np.linspace(0, 12, 7)
    close(simulate(again, t).states, simulate(m, t).states, rtol=1e-12, atol=0)
    assert again.compartments["EV"].volume == "V_med"
    assert set(again.events) == {"desensitize", "redose"}


# ------------------------------------------------------------------------------ errors
GOOD = {
    "compartments": {"A": {"initial": 1}, "B": {}},
    "parameters": {"k": 1.0},
    "reactions": {"r": {"reactants": ["A"], "products": ["B"], "rate": "k * A"}},
}


def error_of(**sections) -> str:
    data = {**GOOD, **sections}
    with pytest.raises(ModelError) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KineticsWarning)
            Model.from_dict(data, source="m.toml")
    return str(info.value)


def test_assignment_cycle_is_refused_naming_the_entries():
    text = error_of(assignments={"a": "b + A", "b": "c * 2", "c": "a"})
    assert "m.toml" in text and "[assignments.a]" in text
    assert "a -> b -> c -> a is a cycle" in text


def test_parameter_value_cycle_is_refused():
    text = error_of(parameters={"k": {"value": "2 * q"}, "q": {"value": "k / 2"}})
    assert "is a cycle" in text and "k" in text and "q" in text


def test_unknown_names_in_reactions_and_events():
    text = error_of(reactions={"r": {"reactants": ["A"], "products": ["Bb"], "rate": "k * A"}})
    assert "[reactions.r] 'products' names the unknown compartment 'Bb' (did you mean 'B'?)" in text
    text = error_of(events={"e": {"trigger": "A > 1", "assign": {"nope": "0"}}})
    assert "[events.e] assigns the unknown target 'nope'" in text
    text = error_of(rates={"A": "-A"})
    assert "[rates.A] 'A' is a compartment" in text


def test_bad_stoichiometry_is_refused():
    text = error_of(reactions={"r": {"reactants": {"A": -1}, "products": ["B"], "rate": "k * A"}})
    assert "[reactions.r] 'reactants' gives 'A' the stoichiometry -1; a stoichiometry is a positive number" in text
    text = error_of(reactions={"r": {"reactants": {"A": "two"}, "rate": "k * A"}})
    assert "stoichiometry 'two'" in text
    text = error_of(reactions={"r": {"rate": "k"}})
    assert "has neither 'reactants' nor 'products'" in text


def test_comparisons_only_in_triggers():
    text = error_of(reactions={"r": {"reactants": ["A"], "rate": "k * (A > 1)"}})
    assert "[reactions.r] rate" in text and "condition" in text
    text = error_of(events={"e": {"trigger": "A + 1", "assign": {"A": "0"}}})
    assert "[events.e] trigger 'A + 1' is a value, not a condition" in text


def test_reaction_units_checked_with_stoichiometry():
    units = {"compartments": {"A": {"initial": 1, "unit": "particles"}, "B": {"unit": "ng"}},
             "parameters": {"k": {"value": 1.0, "unit": "1/h"}}}
    text = error_of(**units)
    assert "[reactions.r] connects pools in different units" in text
    ok = {"compartments": {"A": {"initial": 1, "unit": "particles"}, "B": {"unit": "particles"}},
          "parameters": {"k": {"value": 1.0, "unit": "1/h"}, "q": {"value": 2.0, "unit": "particles"}},
          "rates": {"q": "k"}}
    text = error_of(**ok)
    assert "[rates.q] dq/dt = 'k' has unit '1/h' but must be 'particles/h'" in text
    text = error_of(compartments=ok["compartments"], parameters=ok["parameters"],
                    assignments={"a": {"expr": "k * A", "unit": "particles"}})
    assert "[assignments.a] 'k * A' has unit 'particles/h' but is declared 'particles'" in text


# ------------------------------------------------------------------------------ fitting
FIT_MODEL = {
    "compartments": {"A": {"initial": "A0"}, "B": {}},
    "parameters": {"A0": {"value": 100.0, "fixed": True}, "k1": {"value": 0.2, "min": 1e-3, "max": 10},
                   "k2": {"value": "2 * k1"}, "k_up": {"value": 1.0}, "k_tol": {"value": 0.3, "min": 1e-3, "max": 10}},
    "rates": {"k_up": "-k_tol * k_up"},
    "flows": {"ab": {"from": "A", "to": "B", "rate": "k2 * A"}, "out": {"from": "B", "rate": "k_up * B"}},
    "events": {"top_up": {"trigger": "B > 30", "assign": {"A": "A + 50"}}},
}


def test_fit_through_events_rate_rules_and_computed_parameters():
    from kinetics.fit import fit
    from kinetics.problem import FitProblem
    m = Model.from_dict(FIT_MODEL)
    assert kinetics.compile_model(m).parameter_names == ["A0", "k1", "k2", "k_tol"]
    times = np.linspace(0.5, 10, 20)
    truth = {"k1": 0.25, "k_tol": 0.2}
    sim = simulate(m, times, parameters=truth)
    data = pd.DataFrame({"time": np.concatenate([times, times]), "observable": ["A"] * 20 + ["B"] * 20,
                         "value": np.concatenate([sim["A"], sim["B"]])})
    problem = FitProblem(m, data, ["k1", "k_tol"], noise="proportional")
    # the Jacobian (exact sensitivities through the events) matches differences of the predictions
    x = problem.start()
    f, J = problem.predict(x, jacobian=True)
    h = 1e-6
    for k in range(2):
        step = np.zeros(2)
        step[k] = h
        fd = (problem.predict(x + step)[0] - problem.predict(x - step)[0]) / (2 * h)
        close(J[:, k], fd, rtol=1e-4, atol=1e-6 * np.abs(f).max())
    result = fit(problem, multistart=1, profiles=False, progress=False)
    close(result.values, [truth["k1"], truth["k_tol"]], rtol=1e-4)
    with pytest.raises(Exception, match="'k2' is computed from its value expression"):
        FitProblem(m, data, ["k2"], noise="proportional")


def test_event_units_are_checked():
    units = {"compartments": {"A": {"initial": 1, "unit": "particles"}, "B": {"unit": "particles"}},
             "parameters": {"k": {"value": 1.0, "unit": "1/h"}}}
    text = error_of(**units, events={"e": {"trigger": "A > k", "assign": {"A": "0"}}})
    assert "[events.e] trigger 'A > k'" in text and "'particles' and '1/h'" in text
    text = error_of(**units, events={"e": {"trigger": "A > 2", "assign": {"A": "k"}}})
    assert "[events.e] assign A = 'k' has unit '1/h' but A is in 'particles'" in text



def test_triggered_events_with_doses_and_fixed_time_events():
    # a dose at t=1 pushes A over the threshold (the triggered event fires at once); a fixed-time
    # change of k at t=2 from simulate(events=...)
    m = Model.from_dict({
        "compartments": {"A": {"initial": 1}, "B": {}},
        "parameters": {"k": 0.5, "kb": 0.2},
        "flows": {"ab": {"from": "A", "to": "B", "rate": "k * A"}, "out": {"from": "B", "rate": "kb * B"}},
        "events": {"spill": {"trigger": "A > 5", "assign": {"B": "B + 100"}}},
    })
    t = np.linspace(0, 4, 9)
    sim = simulate(m, t, doses=[{"compartment": "A", "amount": 10.0, "time": 1.0}],
                   events=[{"time": 2.0, "set": {"k": "k * 4"}}])
    state = {"k": 0.5}

    def rhs(_, y):
        return [-state["k"] * y[0], state["k"] * y[0] - 0.2 * y[1]]

    def dose(_, y):
        return [y[0] + 10, y[1] + 100]  # the dose makes A > 5: spill fires at the same instant

    def switch(_, y):
        state["k"] = 2.0
        return y
    ref = radau(rhs, [1, 0], t, breaks=[(1.0, dose), (2.0, switch)])
    close(sim.states, ref)
