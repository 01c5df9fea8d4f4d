"""Steady states: exact (affine), symbolic and Newton paths against independent solutions and
long simulations; sinks; sensitivities versus finite differences; settling time in closed
form; what-if scenarios; refusals with their messages."""

import json
import math

import numpy as np
import pytest

from kinetics import Model, ModelError, SolverError, compile_model, load_model, simulate
from kinetics.model.library import bundled_models
from kinetics.analysis.steady import SteadyState, compare_scenarios, steady_plan, steady_state

BUNDLED = bundled_models()
AFFINE = [name for name, info in BUNDLED.items() if compile_model(load_model(info["path"])).affine]


def bundled(name):
    return load_model(BUNDLED[name]["path"])


def independent_solution(model, parameters=None):
    """Bounded steady state and sink rates from the full A, b (numpy only)."""
    c = compile_model(model)
    p = c.parameter_vector(parameters)
    A, b = c.affine_matrices(p)
    sources = {f.source for f in model.flows.values()}
    names = c.state_names
    sinks = [i for i, n in enumerate(names) if n not in sources and not A[:, i].any()]
    bounded = [i for i in range(len(names)) if i not in sinks]
    x = np.linalg.solve(A[np.ix_(bounded, bounded)], -b[bounded])
    rates = A[np.ix_(sinks, bounded)] @ x + b[sinks]
    return dict(zip([names[i] for i in bounded], x)), dict(zip([names[i] for i in sinks], rates))


def one_compartment(k=0.5, s=10.0, x0=0.0):
    m = Model("fill", time_unit="h")
    m.add_compartment("X", initial=x0, unit="particles")
    m.add_parameter("k", k, min=0, max=100, unit="1/h")
    m.add_parameter("s", s, min=0, max=1e6, unit="particles/h")
    m.add_flow("production", "s", target="X")
    m.add_flow("loss", "k * X", source="X")
    return m


def saturable_with_input():
    """circulation_saturable plus a constant inflow into plasma: a nonzero nonlinear steady state."""
    m = bundled("circulation_saturable").copy()
    m.add_parameter("infusion", 5e10, min=0, max=1e15, unit="particles/h")
    m.add_flow("infusion_flow", "infusion", target="plasma")
    return m


def long_run(model, parameters=None, t_end=2000.0):
    sim = simulate(model, np.array([0.0, t_end]), parameters=parameters, rtol=1e-12, atol=1e-12)
    return dict(zip(sim.state_names, sim.states[-1]))


# ------------------------------------------------------------------------ affine, exact
@pytest.mark.parametrize("name", AFFINE)
def test_bundled_affine_equals_solution_of_A_x_eq_minus_b(name):
    model = bundled(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    c = compile_model(model)
    for trial in range(2):
        params = None if trial == 0 else {n: v * rng.uniform(0.5, 2.0) for n, v in zip(c.parameter_names, c.default_parameters)}
        values, rates = independent_solution(model, params)
        ss = steady_state(model, params)
        assert ss.method == "exact-linear"
        assert set(ss.values) == set(values) and set(ss.sinks) == set(rates)
        scale = max([abs(v) for v in values.values()] + [abs(v) for v in rates.values()] + [1e-300])
        for n, v in values.items():
            assert ss.values[n] == pytest.approx(v, rel=1e-10, abs=1e-12 * scale)
        for n, v in rates.items():
            assert ss.sinks[n] == pytest.approx(v, rel=1e-10, abs=1e-12 * scale)
        assert ss.stable


@pytest.mark.parametrize("name", AFFINE)
def test_bundled_affine_symbolic_expressions_evaluate_to_the_values(name):
    import sympy as sp
    model = bundled(name)
    ss = steady_state(model)
    expressions = ss.expressions
    assert set(expressions) == set(model.compartments)
    symbols = {n: sp.Symbol(n, real=True) for n in model.parameters}
    for comp, text in expressions.items():
        value = float(sp.sympify(text, locals=symbols).subs({symbols[k]: v for k, v in ss.parameters.items()}))
        expected = ss.values.get(comp, ss.sinks.get(comp))
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-9)


def test_exo_linear_reference_values_sinks_fluxes_and_json():
    model = bundled("exo_linear")
    ss = steady_state(model)
    assert ss.values == pytest.approx({"EE": 1250.0, "MVB": 625.0, "P": 6.25, "T": 25.0}, rel=1e-12)
    assert ss.sinks == pytest.approx({"LYS": 500.0, "U": 125.0}, rel=1e-12)
    assert ss.expressions["EE"] == "s_endo/(k_mat + k_rec)"
    assert ss.fluxes["secretion"] == pytest.approx(125.0)
    assert ss.fluxes["degradation"] == pytest.approx(500.0)
    assert ss.fluxes["recycling"] == pytest.approx(375.0)
    # P-T block: eigenvalues of [[-(k_pt+k_cl), k_tp], [k_pt, -k_tp]]
    tr, det = -22.5, 22 * 0.5 - 2 * 0.5
    pt = sorted([(tr + math.sqrt(tr * tr - 4 * det)) / 2, (tr - math.sqrt(tr * tr - 4 * det)) / 2], reverse=True)
    assert ss.eigenvalues == pytest.approx([pt[0], -0.8, -1.0, pt[1]], rel=1e-12)
    d = ss.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert set(d) == {"model", "compartments", "stable", "eigenvalues", "time_to_95pct", "fluxes", "sensitivities", "method"}
    assert d["model"] == "exo_linear" and d["stable"] is True and d["method"] == "exact-linear"
    assert d["compartments"]["EE"] == {"value": 1250.0, "expression": "s_endo/(k_mat + k_rec)", "sink": False}
    assert d["compartments"]["LYS"]["sink"] is True and d["compartments"]["LYS"]["rate"] == pytest.approx(500.0)
    assert "value" not in d["compartments"]["LYS"] and "expression" in d["compartments"]["LYS"]
    assert d["sensitivities"]["P"]["k_cl"] == pytest.approx(-1.0)
    report = ss.report()
    assert "LYS" in report and "s_endo/(k_mat + k_rec)" in report and "stable: yes" in report


def test_parameters_and_scale():
    model = bundled("exo_linear")
    ss = steady_state(model, {"s_endo": 2000}, scale={"k_sec": 0.5, "s_endo": 0.5})
    assert ss.parameters["k_sec"] == pytest.approx(0.1) and ss.parameters["s_endo"] == pytest.approx(1000)
    assert ss.values["P"] == pytest.approx(1000 * 0.5 / 0.8 * 0.1 / 0.9 / 20)
    with pytest.raises(ModelError, match="cannot scale unknown parameter 'k_secc'.*did you mean 'k_sec'"):
        steady_state(model, scale={"k_secc": 2})
    with pytest.raises(ModelError, match="no parameter 'kcl'"):
        steady_state(model, {"kcl": 2})


def test_plan_fast_path_matches_and_is_cached():
    model = bundled("exo_linear")
    plan = steady_plan(model)
    assert steady_plan(compile_model(model)) is plan
    x, r = plan.solve(compile_model(model).default_parameters)
    assert x == pytest.approx([1250, 625, 6.25, 25]) and r == pytest.approx([500, 125])
    assert plan.bounded_names == ["EE", "MVB", "P", "T"] and plan.sink_names == ["LYS", "U"]


def test_newton_path_on_an_affine_model_agrees_with_exact():
    model = bundled("lifecycle")
    exact = steady_state(model)
    newton = steady_state(model, method="newton")
    assert newton.method == "newton"
    for k, v in exact.values.items():
        assert newton.values[k] == pytest.approx(v, rel=1e-10)


# -------------------------------------------------------------------------- nonlinear
def test_exo_sat_symbolic_and_newton_match_reference_and_long_simulation():
    model = bundled("exo_sat")
    expected = {"EE": 1250.0, "MVB": 625.0, "P": 125 * 50 / 275, "T": 4 * 125 * 50 / 275}
    sym = steady_state(model)
    assert sym.method == "symbolic"
    assert sym.values == pytest.approx(expected, rel=1e-12)
    assert sym.sinks == pytest.approx({"LYS": 500.0, "U": 125.0}, rel=1e-12)
    assert "Vmax" in sym.expressions["P"] and "Km" in sym.expressions["P"]
    newton = steady_state(model, method="newton")
    assert newton.method == "newton"
    assert newton.values == pytest.approx(expected, rel=1e-10)
    assert newton.expressions["P"] == sym.expressions["P"]  # matched to the symbolic candidate
    end = long_run(model, t_end=500.0)
    for k, v in newton.values.items():
        assert end[k] == pytest.approx(v, rel=1e-6)
    assert sym.stable and max(sym.eigenvalues) < 0


@pytest.mark.parametrize("method", ["auto", "newton"])
def test_saturable_circulation_matches_long_simulation(method):
    model = saturable_with_input()
    ss = steady_state(model, method=method)
    end = long_run(model, t_end=200.0)
    assert ss.values["plasma"] > 0
    for k, v in ss.values.items():
        assert end[k] == pytest.approx(v, rel=1e-6)
    # the sinks' inflow rates equal the flows into them
    assert ss.sinks["macrophage_cleared"] == pytest.approx(ss.fluxes["macrophage_uptake"], rel=1e-12)
    assert ss.sinks["other_cleared"] == pytest.approx(ss.fluxes["linear_clearance"], rel=1e-12)
    total_out = ss.sinks["macrophage_cleared"] + ss.sinks["other_cleared"]
    assert total_out == pytest.approx(5e10, rel=1e-9)  # mass balance


def test_bundled_saturable_circulation_without_input_settles_to_zero():
    ss = steady_state(bundled("circulation_saturable"))
    assert ss.values == {"plasma": 0.0, "tissue": 0.0}
    assert ss.time_to_95pct == 0.0


# ----------------------------------------------------------------------- sensitivities
def finite_difference_sensitivities(model, method, names, h=1e-6):
    base = steady_state(model, method=method)
    out = {}
    for pname in names:
        up = steady_state(model, scale={pname: 1 + h}, method=method)
        down = steady_state(model, scale={pname: 1 - h}, method=method)
        denom = math.log(1 + h) - math.log(1 - h)
        for comp in base.values:
            out[(comp, pname)] = (math.log(up.values[comp]) - math.log(down.values[comp])) / denom
        for comp in base.sinks:
            out[(comp, pname)] = (math.log(up.sinks[comp]) - math.log(down.sinks[comp])) / denom
    return base, out


@pytest.mark.parametrize("name,method", [("exo_linear", "auto"), ("exo_sat", "auto"), ("exo_sat", "newton"),
                                         ("lifecycle", "auto")])
def test_sensitivities_agree_with_finite_differences(name, method):
    model = bundled(name)
    names = list(model.parameters)
    base, fd = finite_difference_sensitivities(model, method, names)
    S = base.sensitivities
    assert list(S.columns) == names and set(S.index) == set(model.compartments)
    for (comp, pname), value in fd.items():
        assert S.at[comp, pname] == pytest.approx(value, abs=1e-6), (comp, pname)


# ------------------------------------------------------------------------ settling time
@pytest.mark.parametrize("k", [0.05, 0.5, 7.0])
def test_time_to_95pct_one_compartment_is_ln20_over_k(k):
    ss = steady_state(one_compartment(k=k))
    assert ss.values["X"] == pytest.approx(10.0 / k)
    assert ss.time_to_95pct == pytest.approx(math.log(20) / k, rel=1e-9)


def test_time_to_95pct_starting_above_the_steady_state():
    # x0 = 3 x*: the distance 2 x* is larger than x*, so within 5 % of it: again ln(20)/k
    k = 0.5
    ss = steady_state(one_compartment(k=k, x0=60.0))
    assert ss.time_to_95pct == pytest.approx(math.log(20) / k, rel=1e-9)
    # x0 = 1.5 x*: within 5 % of x* means a distance ratio of 0.1: ln(10)/k
    ss = steady_state(one_compartment(k=k, x0=30.0))
    assert ss.time_to_95pct == pytest.approx(math.log(10) / k, rel=1e-9)


def test_time_to_95pct_nonlinear_matches_a_dense_simulation():
    model = bundled("exo_sat")
    ss = steady_state(model)
    t = np.linspace(0, 30, 30001)
    sim = simulate(model, t, rtol=1e-10, atol=1e-10)
    x_star = np.array([ss.values[n] for n in ss.values])
    X = np.column_stack([sim[n] for n in ss.values])
    dev = np.abs(X - x_star)
    tol = 0.05 * np.maximum(np.abs(x_star), dev.max(axis=0))
    last_bad = t[np.nonzero((dev > tol).any(axis=1))[0][-1]]
    assert ss.time_to_95pct == pytest.approx(last_bad, abs=2e-3)
    assert ss.settling_times["T"] == pytest.approx(ss.time_to_95pct)


# ------------------------------------------------------------------------------ what-if
def test_compare_scenarios_absolute_and_fold_changes():
    model = bundled("exo_linear")
    table = compare_scenarios(model, None, {
        "rab27a_kd": {"scale": {"k_sec": 0.5}},
        "faster_clearance": {"k_cl": 40},
        "both": {"set": {"k_cl": 40}, "scale": {"k_sec": 0.5}},
    })
    assert table.at["EE", "baseline"] == pytest.approx(1250)
    assert table.at["EE", "rab27a_kd fold"] == pytest.approx(1.0)
    p_fold = (0.1 / 0.9) / (0.2 / 1.0)
    assert table.at["P", "rab27a_kd fold"] == pytest.approx(p_fold)
    assert table.at["P", "rab27a_kd"] == pytest.approx(6.25 * p_fold)
    assert table.at["P", "rab27a_kd change"] == pytest.approx(6.25 * p_fold - 6.25)
    assert table.at["P", "faster_clearance fold"] == pytest.approx(0.5)
    assert table.at["P", "both fold"] == pytest.approx(0.5 * p_fold)
    assert table.at["LYS", "kind"] == "sink rate"
    assert table.at["LYS", "rab27a_kd"] == pytest.approx(625 * 0.8 / 0.9)
    assert table.at["secretion", "kind"] == "flux"
    assert table.at["secretion", "rab27a_kd fold"] == pytest.approx(125 * p_fold / 125 * (0.9 / 0.9))
    # a baseline of its own: scenarios apply on top of it
    table = compare_scenarios(model, {"s_endo": 2000}, {"half": {"scale": {"s_endo": 0.5}}})
    assert table.at["EE", "baseline"] == pytest.approx(2500)
    assert table.at["EE", "half fold"] == pytest.approx(0.5)


def test_compare_scenarios_names_the_failing_scenario():
    with pytest.raises(SolverError, match="scenario 'overload'.*no steady state"):
        compare_scenarios(bundled("exo_sat"), None, {"overload": {"Vmax": 100}})


# ----------------------------------------------------------------------------- refusals
def test_refuses_accumulating_compartment_that_is_not_a_sink():
    m = Model("feedback")
    m.add_compartment("X")
    m.add_compartment("Y")
    m.add_parameter("s", 1.0)
    m.add_parameter("k", 0.5)
    m.add_parameter("k2", 1.0)
    m.add_flow("source", "s", target="X")
    m.add_flow("stimulation", "k * X", target="Y")
    m.add_flow("loss", "k2 * Y", source="Y")
    with pytest.raises(SolverError) as info:
        steady_state(m)
    msg = str(info.value)
    assert "model 'feedback' has no steady state" in msg
    assert "'X' accumulates without bound" in msg
    assert "'X' is not a sink because flow 'stimulation' depends on it" in msg and "Add an outflow from 'X'" in msg


def test_refuses_closed_exchange_without_loss():
    m = Model("closed")
    m.add_compartment("P", initial=1.0)
    m.add_compartment("T")
    m.add_parameter("a", 1.0)
    m.add_parameter("b", 0.5)
    m.add_flow("out", "a * P", source="P", target="T")
    m.add_flow("back", "b * T", source="T", target="P")
    with pytest.raises(SolverError, match=r"no unique steady state: 'P' and 'T' exchange material.*total is conserved"):
        steady_state(m)


def test_refuses_unstable_autocatalytic_growth():
    m = Model("growth")
    m.add_compartment("X", initial=1.0)
    m.add_parameter("k", 0.5)
    m.add_parameter("d", 0.2)
    m.add_flow("replication", "k * X", target="X")
    m.add_flow("death", "d * X", source="X")
    with pytest.raises(SolverError) as info:
        steady_state(m)
    msg = str(info.value)
    assert "model 'growth': the steady state is unstable" in msg
    assert "+0.3 per h" in msg and "'X'" in msg and "'replication'" in msg and "autocatalytic" in msg
    ss = steady_state(m, allow_unstable=True)
    assert ss.stable is False and ss.eigenvalues == pytest.approx([0.3])


def test_refuses_nonlinear_divergence_with_saturated_clearance():
    with pytest.raises(SolverError) as info:
        steady_state(bundled("exo_sat"), {"Vmax": 100})
    msg = str(info.value)
    assert "model 'exo_sat' has no steady state" in msg
    assert "'P' and 'T' grow without bound" in msg and "Vmax" in msg and "Vmax=100" in msg


def test_refuses_time_dependent_model():
    m = Model("pulsed")
    m.add_compartment("X")
    m.add_parameter("k", 0.5)
    m.add_flow("pulse", "k * t", target="X")
    m.add_flow("loss", "k * X", source="X")
    with pytest.raises(ModelError, match="no time-invariant steady state: the rate of flow 'pulse' depends on the time t"):
        steady_state(m)


def test_exact_linear_method_refused_for_nonlinear_model():
    with pytest.raises(ModelError, match="not affine-linear"):
        steady_state(bundled("exo_sat"), method="exact-linear")


def test_accepts_model_path_and_returns_steady_state():
    ss = steady_state(BUNDLED["exo_linear"]["path"])
    assert isinstance(ss, SteadyState) and ss.model_name == "exo_linear"


def test_refuses_a_rate_constant_of_zero_naming_the_trapped_compartments():
    with pytest.raises(SolverError) as info:
        steady_state(bundled("exo_linear"), {"k_cl": 0.0})
    msg = str(info.value)
    assert "'P' and 'T' accumulate without bound" in msg and "rate constant set to 0" in msg and "k_cl=0" in msg


@pytest.mark.parametrize("x0,expected_range", [(0.1, (0.1, 0.3)), (3.0, (1.5, 2.0))])
def test_bistable_model_settles_in_the_basin_of_its_initial_state(x0, expected_range):
    m = Model("bistable")
    m.add_compartment("X", initial=x0)
    for name, value in (("a", 0.05), ("b", 1.0), ("K", 1.0), ("d", 0.45)):
        m.add_parameter(name, value)
    m.add_flow("basal", "a", target="X")
    m.add_flow("feedback", "b * X**2 / (K**2 + X**2)", target="X")
    m.add_flow("decay", "d * X", source="X")
    ss = steady_state(m)
    assert ss.method == "newton" and ss.stable
    assert expected_range[0] < ss.values["X"] < expected_range[1]
    end = long_run(m, t_end=500.0)
    assert end["X"] == pytest.approx(ss.values["X"], rel=1e-6)


def test_steady_state_of_a_reaction_network_with_a_boundary_pool():
    # L is held (boundary): X settles where k L0 = kd X; 2 A <-> C with inflow of A and loss of C
    m = Model.from_dict({
        "compartments": {"L": {"initial": "L0", "boundary": True}, "X": {}, "A": {}, "C": {}},
        "parameters": {"L0": 4.0, "k": 0.5, "kd": 2.0, "sA": 1.0, "kf": 0.1, "kr": 0.2, "kc": 0.3},
        "reactions": {"make": {"reactants": ["L"], "products": ["X"], "rate": "k * L"},
                      "loss": {"reactants": ["X"], "rate": "kd * X"},
                      "dimer": {"reactants": {"A": 2}, "products": ["C"], "rate": "kf * A**2 - kr * C"},
                      "clear": {"reactants": {"C": 1}, "rate": "kc * C"}},
        "flows": {"inA": {"to": "A", "rate": "sA"}},
    })
    ss = steady_state(m)
    assert ss.values["X"] == pytest.approx(0.5 * 4.0 / 2.0, rel=1e-9)
    C = 1.0 / (2 * 0.3)  # every A ends in C, two per C, cleared at kc C
    assert ss.values["C"] == pytest.approx(C, rel=1e-8)
    assert ss.values["A"] == pytest.approx(math.sqrt((0.2 + 0.3) * C / 0.1), rel=1e-8)


def test_zero_values_and_sensitivities_carry_no_sign():
    """A model without inflow rests at 0, and a parameter that moves nothing has sensitivity 0:
    neither is reported as -0.0 (JSON) or "-0" (text)."""
    state = steady_state(bundled("circulation_2c"))
    assert all(math.copysign(1.0, v) == 1.0 for v in state.values.values())
    text = json.dumps(state.to_dict())
    assert "-0.0," not in text and "-0.0}" not in text
    assert " -0 " not in state.report()
    sensitivities = steady_state(bundled("ilv_budding")).to_dict()["sensitivities"]
    assert all(math.copysign(1.0, v) == 1.0 for row in sensitivities.values() for v in row.values() if v == 0)
