"""Simulation against hand-computed solutions: decay, chains, conservation, doses, infusions,
switches; exact versus numerical path; sensitivities versus finite differences."""

import math

import numpy as np
import pytest

import kinetics
from kinetics import Model, SolverError, simulate
from kinetics.model.library import bundled_models
from conftest import write_model


def one_compartment(k=0.5, x0=100.0, source=None):
    m = Model("decay")
    m.add_compartment("X", initial=x0, unit="particles")
    m.add_parameter("k", k, min=1e-6, max=100, unit="1/h")
    m.add_flow("loss", "k * X", source="X")
    if source is not None:
        m.add_parameter("s", source, min=0, max=1e6, unit="particles/h")
        m.add_flow("production", "s", target="X")
    return m


def chain_model(k1=1.3, k2=0.4, a0=10.0):
    m = Model("chain")
    for name, initial in (("A", a0), ("B", 0.0), ("C", 0.0)):
        m.add_compartment(name, initial=initial)
    m.add_parameter("k1", k1, min=0, max=10)
    m.add_parameter("k2", k2, min=0, max=10)
    m.add_flow("ab", "k1 * A", source="A", target="B")
    m.add_flow("bc", "k2 * B", source="B", target="C")
    return m


def saturable_model():
    m = Model("mm")
    m.add_compartment("P", initial=500.0)
    m.add_parameter("Vmax", 40.0, min=1, max=1e3)
    m.add_parameter("Km", 60.0, min=1, max=1e3)
    m.add_flow("clearance", "Vmax * P / (Km + P)", source="P")
    return m


T = np.linspace(0, 12, 25)


def assert_close(actual, expected, rtol):
    """Relative to the curve's own scale (absolute tolerances make tiny tails noisy)."""
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_one_compartment_decay(method):
    sim = simulate(one_compartment(), T, method=method)
    tol = 1e-13 if method == "auto" else 1e-7
    assert_close(sim["X"], 100 * np.exp(-0.5 * T), tol)


def test_source_and_decay_reaches_s_over_k():
    sim = simulate(one_compartment(k=0.25, x0=0.0, source=30.0), T)
    np.testing.assert_allclose(sim["X"], 30 / 0.25 * (1 - np.exp(-0.25 * T)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_chain_closed_form(method):
    k1, k2, a0 = 1.3, 0.4, 10.0
    sim = simulate(chain_model(k1, k2, a0), T, method=method)
    A = a0 * np.exp(-k1 * T)
    B = a0 * k1 / (k2 - k1) * (np.exp(-k1 * T) - np.exp(-k2 * T))
    tol = 1e-12 if method == "auto" else 1e-7
    assert_close(sim["A"], A, tol)
    assert_close(sim["B"], B, tol)
    assert_close(sim["C"], a0 - A - B, tol)


def test_chain_equal_rates_defective_case():
    k = 0.9
    sim = simulate(chain_model(k, k, 4.0), T)
    np.testing.assert_allclose(sim["B"], 4.0 * k * T * np.exp(-k * T), rtol=1e-12, atol=1e-14)


def test_closed_system_conserves_total():
    m = Model("closed")
    for n in "ABC":
        m.add_compartment(n, initial={"A": 3.0, "B": 2.0, "C": 1.0}[n])
    for name, value in (("kab", 0.8), ("kba", 0.3), ("kbc", 1.1), ("kca", 0.2)):
        m.add_parameter(name, value, min=0, max=10)
    m.add_flow("ab", "kab * A", "A", "B")
    m.add_flow("ba", "kba * B", "B", "A")
    m.add_flow("bc", "kbc * B", "B", "C")
    m.add_flow("ca", "kca * C", "C", "A")
    for method in ("auto", "numerical"):
        sim = simulate(m, T, method=method)
        np.testing.assert_allclose(sim.states.sum(axis=1), 6.0, rtol=1e-12 if method == "auto" else 1e-8)


def test_michaelis_menten_closed_form_via_lambert_w():
    from scipy.special import lambertw
    Vmax, Km, P0 = 40.0, 60.0, 500.0
    sim = simulate(saturable_model(), T, rtol=1e-10, atol=1e-12)
    assert sim.method == "numerical"
    exact = Km * np.real(lambertw(P0 / Km * np.exp((P0 - Vmax * T) / Km)))
    np.testing.assert_allclose(sim["P"], exact, rtol=1e-7)


def test_bolus_dose_at_time():
    m = one_compartment(k=0.5, x0=0.0)
    sim = simulate(m, T, doses=[{"compartment": "X", "amount": 80.0, "time": 2.0}])
    expected = np.where(T >= 2.0, 80 * np.exp(-0.5 * (T - 2.0)), 0.0)
    np.testing.assert_allclose(sim["X"], expected, rtol=1e-12, atol=1e-12)
    # right-continuous: the output at the dose time includes the dose
    assert sim["X"][T == 2.0][0] == pytest.approx(80.0)


def test_constant_infusion_window():
    k, rate, start, end = 0.5, 12.0, 1.0, 4.0
    sim = simulate(one_compartment(k=k, x0=0.0), T, doses=[kinetics.Infusion("X", rate, start, end)])
    during = rate / k * (1 - np.exp(-k * (T - start)))
    at_end = rate / k * (1 - np.exp(-k * (end - start)))
    expected = np.where(T < start, 0.0, np.where(T < end, during, at_end * np.exp(-k * (T - end))))
    np.testing.assert_allclose(sim["X"], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_parameter_switch_event(method):
    k, T_switch = 0.6, 3.0
    sim = simulate(one_compartment(k=k, x0=50.0), T, events=[{"time": T_switch, "set": {"k": "k / 3"}}], method=method)
    before = 50 * np.exp(-k * T)
    after = 50 * np.exp(-k * T_switch) * np.exp(-k / 3 * (T - T_switch))
    tol = 1e-12 if method == "auto" else 1e-7
    assert_close(sim["X"], np.where(T < T_switch, before, after), tol)


def test_events_and_doses_on_saturable_model_match_exactly_split_runs():
    m = saturable_model()
    full = simulate(m, [0, 1, 2, 5, 8], doses=[{"compartment": "P", "amount": 100, "time": 2}],
                    events=[{"time": 5, "set": {"Vmax": "2 * Vmax"}}], rtol=1e-10, atol=1e-12)
    first = simulate(m, [0, 1, 2], rtol=1e-10, atol=1e-12)
    second = simulate(m, [2, 5], initial={"P": first["P"][-1] + 100}, t0=2, rtol=1e-10, atol=1e-12)
    third = simulate(m, [5, 8], initial={"P": second["P"][-1]}, parameters={"Vmax": 80.0}, t0=5, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full["P"][[3, 4]], [second["P"][1], third["P"][1]], rtol=1e-8)


def linear_bundled():
    names = []
    for name, info in bundled_models().items():
        model = kinetics.load_model(info["path"])
        if kinetics.compile_model(model).affine:
            names.append(name)
    return names


@pytest.mark.parametrize("name", linear_bundled())
def test_exact_and_numerical_paths_agree_on_bundled_linear_models(name):
    model = kinetics.load_model(bundled_models()[name]["path"])
    doses = []
    if "plasma" in model.compartments:
        doses = [{"compartment": "plasma", "amount": 1e10, "time": 0.0}]
    elif "blood" in model.compartments:
        doses = [{"compartment": "blood", "amount": 1e10, "time": 0.0}]
    times = np.concatenate([[0.0], np.logspace(-2, np.log10(48), 30)])
    exact = simulate(model, times, doses=doses)
    numeric = simulate(model, times, doses=doses, method="numerical", rtol=1e-11, atol=1e-14)
    scale = np.maximum(np.max(np.abs(exact.states), axis=0), 1e-300)
    assert np.max(np.abs(exact.states - numeric.states) / scale) < 1e-8


@pytest.mark.parametrize("model_factory,params", [
    (lambda: kinetics.load_model(bundled_models()["exo_linear"]["path"]), ["k_mat", "k_cl", "s_endo", "k_tp"]),
    (lambda: kinetics.load_model(bundled_models()["exo_sat"]["path"]), ["k_mat", "Vmax", "Km", "k_pt"]),
])
@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_sensitivities_match_finite_differences(model_factory, params, method):
    model = model_factory()
    times = np.logspace(-1, np.log10(48), 12)
    events = [{"time": 10.0, "set": {"k_sec": "k_sec * 0.5"}}]
    doses = [{"compartment": "P", "amount": 300.0, "time": 5.0}]
    sim = simulate(model, times, sensitivities=params, events=events, doses=doses, method=method, rtol=1e-11, atol=1e-12)
    base = model.parameter_values()
    for name in params:
        h = 1e-5 * base[name]
        up = simulate(model, times, parameters={name: base[name] + h}, events=events, doses=doses, method=method, rtol=1e-12, atol=1e-13)
        down = simulate(model, times, parameters={name: base[name] - h}, events=events, doses=doses, method=method, rtol=1e-12, atol=1e-13)
        fd = (up.states - down.states) / (2 * h)
        got = sim.sensitivities[:, :, params.index(name)]
        assert np.max(np.abs(got - fd)) <= 2e-5 * np.max(np.abs(fd)), name


def test_selected_and_general_sensitivity_directions_agree():
    from kinetics.simulation.compiled import compile_model
    """Directions that each select one parameter (what fits on free parameters pass) run on a
    smaller sensitivity system than a general D; sensitivities are linear in D, so a third
    direction mixing the two selected ones, which makes D general, must give their combination."""
    model = kinetics.load_model(bundled_models()["exo_sat"]["path"])
    compiled = compile_model(model)
    names = compiled.parameter_names
    p = compiled.default_parameters
    i, j = names.index("Vmax"), names.index("k_mat")
    D = np.zeros((len(names), 3))
    D[i, 0], D[j, 1] = 2.0, 3.0
    D[i, 2], D[j, 2] = 1.0, 1.0
    times = np.logspace(-1, np.log10(48), 10)
    x0 = compiled.initial_state(p)
    assert compiled._selection(D[:, :2]) == (i, j) and compiled._selection(D) is None
    _, S_selected = compiled.solve(p, x0, times, S0=np.zeros((len(x0), 2)), D=D[:, :2], rtol=1e-11, atol=1e-13)
    _, S_general = compiled.solve(p, x0, times, S0=np.zeros((len(x0), 3)), D=D, rtol=1e-11, atol=1e-13)
    scale = np.max(np.abs(S_general), axis=(0, 1))
    assert np.max(np.abs(S_selected - S_general[:, :, :2]) / scale[:2]) < 1e-8
    mixed = S_selected[:, :, 0] / 2.0 + S_selected[:, :, 1] / 3.0
    assert np.max(np.abs(mixed - S_general[:, :, 2])) < 1e-8 * scale[2]


def test_observable_sensitivity_chain_rule():
    m = one_compartment(k=0.5, x0=100.0)
    m.add_parameter("V", 2.0, min=0.1, max=10, unit="mL", fixed=True)
    m.add_observable("conc", "X / V", unit="particles/mL")
    sim = simulate(m, T, sensitivities=["k", "V"])
    np.testing.assert_allclose(sim.sensitivity("conc", "k"), -T * 100 * np.exp(-0.5 * T) / 2.0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim.sensitivity("conc", "V"), -100 * np.exp(-0.5 * T) / 4.0, rtol=1e-10)


def test_nonlinear_observables_and_their_sensitivities_against_the_closed_form():
    """Observables are evaluated on a compiled tape, all output times in one call (the numpy
    code only without numba): values and sensitivities against X = 100 e^(-k t), and against
    the numpy code to rounding."""
    from kinetics.simulation.compiled import compile_model
    m = one_compartment(k=0.5, x0=100.0)
    m.add_parameter("Vm", 3.0, min=0.1, max=10)
    m.add_parameter("Km", 20.0, min=0.1, max=100)
    m.add_observable("sat", "Vm * X / (Km + X)")
    m.add_observable("fade", "exp(-X / Km)")
    names = ["k", "Vm", "Km"]
    sim = simulate(m, T, sensitivities=names)
    k, Vm, Km = 0.5, 3.0, 20.0
    X = 100 * np.exp(-k * T)
    dX = -T * X                                    # dX/dk
    sat, fade = Vm * X / (Km + X), np.exp(-X / Km)
    expected = {("sat", "k"): Vm * Km / (Km + X) ** 2 * dX, ("sat", "Vm"): X / (Km + X),
                ("sat", "Km"): -Vm * X / (Km + X) ** 2,
                ("fade", "k"): -fade / Km * dX, ("fade", "Vm"): 0 * X, ("fade", "Km"): fade * X / Km ** 2}
    np.testing.assert_allclose(sim["sat"], sat, rtol=1e-13)
    np.testing.assert_allclose(sim["fade"], fade, rtol=1e-13)
    for (obs, name), value in expected.items():
        np.testing.assert_allclose(sim.sensitivity(obs, name), value, rtol=1e-12, atol=1e-14, err_msg=f"{obs}/{name}")
    compiled = compile_model(m)
    if compiled._observable_tapes() is None:
        pytest.skip("without numba only the numpy code runs")
    p = compiled.default_parameters
    D = np.eye(len(p))[:, [compiled.parameter_names.index(n) for n in names]]
    S = sim.sensitivities
    Y, dY = compiled.observe(sim.states, T, p, S, D)
    compiled._obs_tapes = False             # the numpy code
    Y_numpy, dY_numpy = compiled.observe(sim.states, T, p, S, D)
    np.testing.assert_allclose(Y, Y_numpy, rtol=1e-15)
    np.testing.assert_allclose(dY, dY_numpy, rtol=1e-14, atol=1e-15 * np.max(np.abs(dY_numpy)))


def test_initial_value_expression_and_its_sensitivity():
    m = Model("init")
    m.add_compartment("X", initial="dose")
    m.add_parameter("dose", 7.0, min=0, max=100)
    m.add_parameter("k", 0.3, min=0, max=10)
    m.add_flow("loss", "k * X", source="X")
    sim = simulate(m, T, sensitivities=["dose"])
    np.testing.assert_allclose(sim.sensitivity("X", "dose"), np.exp(-0.3 * T), rtol=1e-12)


def test_time_dependent_rate_uses_numerical_path():
    m = Model("forced")
    m.add_compartment("X", initial=0.0)
    m.add_parameter("k", 1.0, min=0, max=10)
    m.add_flow("input", "step(t - 1)", target="X")
    m.add_flow("loss", "k * X", source="X")
    assert not kinetics.compile_model(m).affine
    sim = simulate(m, T)
    expected = np.where(T < 1, 0.0, 1 - np.exp(-(T - 1)))
    np.testing.assert_allclose(sim["X"], expected, atol=1e-6)


def test_solver_failure_raises_with_parameter_values():
    m = Model("blowup")
    m.add_compartment("X", initial=1.0)
    m.add_parameter("k", 1.0, min=0, max=10)
    m.add_flow("autocatalysis", "k * X**2", target="X")
    with pytest.raises(SolverError) as info:
        simulate(m, [0, 0.5, 2.0])
    message = str(info.value)
    assert "blowup" in message and "k=1" in message


def test_simulation_tables_and_plot(tmp_path):
    m = one_compartment()
    m.add_parameter("V", 2.0, fixed=True)
    m.add_observable("conc", "X / V")
    sim = simulate(m, T)
    wide = sim.wide
    assert list(wide.columns) == ["time", "X", "conc"]
    tidy = sim.to_frame()
    assert set(tidy.columns) == {"time", "name", "kind", "value"}
    assert len(tidy) == 2 * len(T)
    sim.to_csv(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().startswith("time,X,conc")
    ax = sim.plot()
    assert ax.get_lines()
    with pytest.raises(KeyError, match="neither a compartment nor an observable"):
        sim["nope"]


def test_bad_simulation_inputs_have_clear_errors():
    m = one_compartment()
    with pytest.raises(kinetics.ModelError, match="unknown compartment 'Y'"):
        simulate(m, T, doses=[{"compartment": "Y", "amount": 1}])
    with pytest.raises(kinetics.ModelError, match="sorted"):
        simulate(m, [3, 1, 2])
    with pytest.raises(kinetics.ModelError, match="unknown parameter 'kk'"):
        simulate(m, T, events=[{"time": 1, "set": {"kk": "1"}}])
    with pytest.raises(kinetics.ModelError, match="has no parameter 'kx'"):
        simulate(m, T, parameters={"kx": 1.0})
    with pytest.raises(kinetics.ModelError, match="ends"):
        simulate(m, T, doses=[{"compartment": "X", "rate": 1, "start": 3, "end": 2}])


def test_math_functions_in_rates_on_both_paths():
    m = Model("functions")
    m.add_compartment("X", initial=2.0)
    m.add_parameter("k", 0.7, min=0, max=10)
    m.add_flow("loss", "exp(-k) * sqrt(k) * log(1 + k) * X", source="X")
    rate = math.exp(-0.7) * math.sqrt(0.7) * math.log(1.7)
    for method in ("auto", "numerical"):
        sim = simulate(m, T, method=method, sensitivities=["k"])
        assert_close(sim["X"], 2.0 * np.exp(-rate * T), 1e-7)
    m2 = Model("nonlinear_functions")
    m2.add_compartment("X", initial=2.0)
    m2.add_parameter("k", 0.7, min=0, max=10)
    m2.add_flow("loss", "k * sqrt(X) * exp(-k)", source="X")
    early = T[T < 2.5]  # d sqrt(X)/dt = -c/2: sqrt(X) falls linearly (and the model ends at X = 0)
    sim = simulate(m2, early, rtol=1e-10, atol=1e-12)
    c = 0.7 * math.exp(-0.7)
    assert_close(sim["X"], (math.sqrt(2.0) - c / 2 * early) ** 2, 1e-6)


def test_scipy_lsoda_fallback_without_numba(monkeypatch):
    """Without numba the nonlinear path runs on scipy's LSODA, sensitivities included."""
    from scipy.special import lambertw

    from kinetics.numerics import jit
    monkeypatch.setattr(jit, "numba_available", lambda: False)
    model = saturable_model()
    sim = simulate(model, T, sensitivities=["Vmax"], rtol=1e-10, atol=1e-12)
    assert kinetics.compile_model(model).numerical_engine == "lsoda"
    Vmax, Km, P0 = 40.0, 60.0, 500.0
    exact = Km * np.real(lambertw(P0 / Km * np.exp((P0 - Vmax * T) / Km)))
    assert_close(sim["P"], exact, 1e-7)
    h = 1e-4
    up = Km * np.real(lambertw(P0 / Km * np.exp((P0 - (Vmax + h) * T) / Km)))
    down = Km * np.real(lambertw(P0 / Km * np.exp((P0 - (Vmax - h) * T) / Km)))
    assert_close(sim.sensitivity("P", "Vmax"), (up - down) / (2 * h), 1e-5)


# ------------------------------------------------------------------ results that are not finite
def growth_model(rate="k * P", observable=None, k=1.0, p0=1.0):
    """dP/dt = k P (by default): exp(k t) passes the largest double near t = 710 / k."""
    m = Model("growth")
    m.add_compartment("P", initial=p0)
    m.add_parameter("k", k)
    m.add_flow("growth", rate, target="P")
    if observable is not None:
        m.add_observable("obs", observable)
    return m


def jordan_growth_model():
    """A defective (Jordan) growth matrix: the eigen path declines it, expm takes over."""
    m = Model("jordan")
    m.add_compartment("A", initial=1.0)
    m.add_compartment("B", initial=0.0)
    m.add_parameter("k", 1.0)
    m.add_flow("grow_a", "k * A", target="A")
    m.add_flow("feed_b", "k * A", target="B")
    m.add_flow("grow_b", "k * B", target="B")
    return m


def test_jordan_growth_model_takes_the_expm_path():
    """Guards the expm row of the table below: that case must really reach the expm fallback."""
    from kinetics.numerics.linear import solve_affine
    A, b = kinetics.compile_model(jordan_growth_model()).affine_matrices([1.0])
    assert solve_affine(A, b, np.array([1.0, 0.0]), np.array([0.0, 1.0]))[2] == "expm"


def no_numba(monkeypatch):
    from kinetics.numerics import jit
    monkeypatch.setattr(jit, "numba_available", lambda: False)


# (case, model factory, simulate keyword arguments, setup, fragments of the message)
NOT_FINITE = [
    ("exact eigen path", growth_model, {}, None, ["P is", "exact solution overflowed"]),
    ("exact path with sensitivities", growth_model, {"sensitivities": True}, None, ["P is", "exact solution"]),
    ("expm fallback", jordan_growth_model, {}, None, ["A is", "at t="]),
    ("expm fallback with sensitivities", jordan_growth_model, {"sensitivities": True}, None, ["A is", "at t="]),
    ("compiled Rosenbrock", growth_model, {"method": "numerical"}, None, ["infinite or NaN after t=", "before t="]),
    ("Rosenbrock with sensitivities", growth_model, {"method": "numerical", "sensitivities": True}, None, ["infinite or NaN"]),
    ("LSODA fallback", growth_model, {"method": "numerical"}, no_numba, ["not finite"]),
    ("LSODA fallback with sensitivities", growth_model, {"method": "numerical", "sensitivities": True}, no_numba, ["not finite"]),
    ("segmented exact path", growth_model, {"doses": [{"compartment": "P", "amount": 1.0, "time": 100.0}]}, None,
     ["P is", "between t=100 and t=1000", "the doses"]),
    ("segmented numerical path", growth_model, {"doses": [{"compartment": "P", "amount": 1.0, "time": 100.0}],
                                                "method": "numerical"}, None, ["infinite or NaN", "between t=100"]),
    # P = 700 exp(t / 100) stays finite; exp(P) does not
    ("observable exp(P)", lambda: growth_model(observable="exp(P)", k=0.01, p0=700.0), {}, None,
     ["observable obs is inf at t=10 "]),
    ("observable exp(P), numerical", lambda: growth_model(observable="exp(P)", k=0.01, p0=700.0),
     {"method": "numerical"}, None, ["observable obs is inf at t=10 "]),
    ("observable exp(P), segmented", lambda: growth_model(observable="exp(P)", k=0.01, p0=700.0),
     {"doses": [{"compartment": "P", "amount": 1.0, "time": 2.0}]}, None, ["observable obs is inf at t=10 "]),
    # P = k t: sqrt(P) is finite at t = 0, its sensitivity (1 / (2 sqrt(P))) dP/dk is not
    ("observable sensitivity", lambda: growth_model(rate="k", observable="sqrt(P)", p0=0.0),
     {"sensitivities": True}, None, ["the sensitivity of observable obs is nan at t=0 "]),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("case, factory, kwargs, setup, fragments", NOT_FINITE, ids=[row[0] for row in NOT_FINITE])
def test_results_that_are_not_finite_raise_a_solver_error(monkeypatch, case, factory, kwargs, setup, fragments):
    if setup is not None:
        setup(monkeypatch)
    times = np.linspace(0, 1000, 101)
    with pytest.raises(SolverError) as info:
        simulate(factory(), times, **kwargs)
    message = str(info.value)
    assert "is not finite" in message and "Parameter values: k=" in message
    assert "shorter time (the last output time is 1000)" in message and "Check that" not in message
    assert "'growth'" in message or "'jordan'" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_first_nonfinite_output_is_named_with_its_time():
    with pytest.raises(SolverError, match=r"P is nan at t=710 "):
        simulate(growth_model(), np.arange(0.0, 1001.0, 10.0))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_observable_overflow_names_the_first_time():
    """exp(P) passes the double range once P > 709.78: with P = 700 e^(t/100) after t = 1.4."""
    with pytest.raises(SolverError, match=r"observable obs is inf at t=2 "):
        simulate(growth_model(observable="exp(P)", k=0.01, p0=700.0), [0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("setup, kwargs, fragment", [
    ("rate", {"parameters": {"k": 1000.0}}, "the constant inflows cannot be evaluated"),
    ("initial", {"parameters": {"k": 1000.0}}, "the initial values cannot be evaluated"),
    ("override", {"parameters": {"k": 1000.0}, "initial": {"P": "exp(k)"}}, "the initial value of P cannot be evaluated"),
    ("event", {"events": [{"time": 1.0, "set": {"k": "exp(1000 * k)"}}]}, "the event at t=1 cannot be evaluated"),
    ("event to inf", {"events": [{"time": 1.0, "set": {"k": "k * 1e300"}}], "parameters": {"k": 1e10}},
     "sets a parameter to a value that is not finite"),
])
def test_overflow_in_parameter_expressions_is_a_solver_error(setup, kwargs, fragment):
    """math.exp(1000) raised OverflowError (a traceback); now a SolverError with the values."""
    m = Model("overflow")
    m.add_compartment("P", initial="exp(k)" if setup == "initial" else 1.0)
    m.add_parameter("k", 1.0)
    m.add_flow("loss", "k * P", source="P")
    if setup == "rate":
        m.add_flow("source", "exp(k)", target="P")
    with pytest.raises(SolverError) as info:
        simulate(m, [0.0, 2.0], **kwargs)
    assert fragment in str(info.value) and "model 'overflow'" in str(info.value)


def test_cli_simulate_of_an_overflowing_model_fails_with_one_paragraph(capsys, tmp_path):
    """It used to exit 0 and write an empty cell."""
    from kinetics.cli import main
    path = tmp_path / "growth.toml"
    path.write_text('[compartments]\nP = { initial = 1 }\n[parameters]\nk = 1\n'
                    '[flows]\ngrowth = { to = "P", rate = "k * P" }\n', encoding="utf-8")
    out_csv = tmp_path / "out.csv"
    code = main(["simulate", str(path), "--t-end", "1000", "--points", "11", "--out", str(out_csv)])
    err = capsys.readouterr().err
    assert code == 1 and "is not finite" in err and "Traceback" not in err
    assert not out_csv.exists()


# ------------------------------------------------------------------ parameter values changed after compiling
@pytest.mark.parametrize("method", ["auto", "numerical"])
def test_changing_a_parameter_value_after_simulating_takes_effect(method):
    m = one_compartment(k=0.5, x0=100.0)
    compiled = kinetics.compile_model(m)
    first = simulate(m, [2.0], method=method)["X"][0]
    m.parameters["k"].value = 1.5
    second = simulate(m, [2.0], method=method)["X"][0]
    third = simulate(compiled, [2.0], method=method)["X"][0]     # a CompiledModel held from before
    assert first == pytest.approx(100 * math.exp(-1.0), rel=1e-7)
    assert second == pytest.approx(100 * math.exp(-3.0), rel=1e-7)
    assert third == second
    assert kinetics.compile_model(m) is compiled                               # nothing was recompiled


@pytest.mark.parametrize("value, fragment", [
    (float("nan"), "has the value nan"),
    ("0.5", "has the value 0.5"),
    (True, "has the value True"),
])
def test_an_invalid_parameter_value_set_after_compiling_is_a_model_error(value, fragment):
    m = one_compartment()
    simulate(m, [1.0])
    m.parameters["k"].value = value
    with pytest.raises(kinetics.ModelError, match=f"parameter 'k' {fragment}; parameter values must be finite numbers"):
        simulate(m, [1.0])


# ------------------------------------------------------------------ bad doses and events
@pytest.mark.parametrize("dose, fragment", [
    ({"compartment": "X", "amount": math.inf}, "dose 1 (bolus into 'X'): amount is infinite"),
    ({"compartment": "X", "amount": math.nan}, "dose 1 (bolus into 'X'): amount is NaN"),
    ({"compartment": "X", "amount": 1.0, "time": math.inf}, "dose 1 (bolus into 'X'): time is infinite"),
    (kinetics.Dose("X", math.inf, 1.0), "dose 1 (bolus into 'X'): amount is infinite"),
    (kinetics.Dose("X", 1.0, math.inf), "dose 1 (bolus into 'X'): time is infinite"),
    (kinetics.Dose("X", "lots"), "dose 1 (bolus into 'X'): amount must be a number, got lots"),
    ({"compartment": "X", "rate": math.inf}, "dose 1 (infusion into 'X'): rate is infinite"),
    ({"compartment": "X", "rate": math.nan}, "dose 1 (infusion into 'X'): rate is NaN"),
    ({"compartment": "X", "rate": 1.0, "start": math.inf}, "dose 1 (infusion into 'X'): start is infinite"),
    ({"compartment": "X", "rate": 1.0, "start": 1.0, "end": math.nan}, "dose 1 (infusion into 'X'): end is NaN"),
    ({"compartment": "X", "rate": 1.0, "start": 1.0, "end": -math.inf}, "dose 1 (infusion into 'X'): end is infinite"),
    ({"compartment": "X", "rate": 1.0, "start": 3.0, "end": 2.0}, "dose 1 (infusion into 'X'): ends (end = 2) before it starts"),
    (kinetics.Infusion("X", 1.0, 2.0, 2.0), "dose 1 (infusion into 'X'): ends (end = 2) before it starts (start = 2)"),
    ({"compartment": "X", "amount": 1.0, "time": -1.0}, "dose 1 (bolus into 'X') at time -1 is before the start time 0"),
    ({"compartment": "Y", "amount": 1.0}, "dose 1 goes into the unknown compartment 'Y'"),
    ("X" * 5000, "expected a table like"),
])
def test_bad_doses_are_named_in_a_model_error(dose, fragment):
    with pytest.raises(kinetics.ModelError) as info:
        simulate(one_compartment(), T, doses=[dose])
    message = str(info.value)
    assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message) < 400


def test_a_second_dose_is_named_by_its_number():
    doses = [{"compartment": "X", "amount": 1.0}, {"compartment": "X", "amount": 1.0, "time": math.inf}]
    with pytest.raises(kinetics.ModelError, match=r"dose 2 \(bolus into 'X'\): time is infinite"):
        simulate(one_compartment(), T, doses=doses)


def test_an_infusion_without_end_lasts_to_the_last_output():
    sim = simulate(one_compartment(k=0.5, x0=0.0), T, doses=[{"compartment": "X", "rate": 2.0, "start": 1.0}])
    assert sim["X"][-1] == pytest.approx(4.0 * (1 - math.exp(-0.5 * (T[-1] - 1.0))), rel=1e-12)


@pytest.mark.parametrize("event, fragment", [
    ({"time": math.inf, "set": {"k": "k / 2"}}, "event 1: time is infinite"),
    (kinetics.Event(math.inf, {"k": "k / 2"}), "event 1: time is infinite"),
    ({"time": math.nan, "set": {"k": "k / 2"}}, "event 1: time is NaN"),
    ({"time": 1.0, "set": {"k": "k * exp(1000)"}}, "contains exp(1000), which is beyond the floating-point range"),
    ({"time": 1.0, "set": {"k": "k * " + "1" * 2000}}, "... ("),
])
def test_bad_events_are_model_errors(event, fragment):
    with pytest.raises(kinetics.ModelError) as info:
        simulate(one_compartment(), T, events=[event])
    assert fragment in str(info.value) and len(str(info.value)) < 600


# a Hill step from a pool that starts empty: x**h is differentiable at x = 0 for h > 1, but its
# second derivative (in the sensitivity system's Jacobian) is infinite there for 1 < h < 2
HILL = {
    "compartments": {"A": {"initial": 0}, "B": {"initial": 0}},
    "parameters": {"s": 1.0, "vmax": 2.0, "K": 1.0, "h": 1.5, "k": 0.3},
    "flows": {"prod": {"to": "A", "rate": "s"}, "conv": {"from": "A", "to": "B", "rate": "vmax * A**h / (K**h + A**h)"},
              "out": {"from": "B", "rate": "k * B"}},
}


def assert_hill_sensitivities_match_central_differences(m, t, sim, h, values):
    """sim's sensitivities of A and B to each parameter in ``values`` (its value there; the Hill
    exponent h) against central differences of tight-tolerance simulations."""
    for name, value in values.items():
        step = 1e-4 * value
        up, down = (simulate(m, t, parameters={"h": h, name: value + sign * step}, rtol=1e-12, atol=1e-14)
                    for sign in (1, -1))
        for pool in ("A", "B"):
            fd = (up[pool] - down[pool]) / (2 * step)
            np.testing.assert_allclose(sim.sensitivity(pool, name), fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("h", [1.2, 1.5, 2.0, 2.5])
def test_hill_sensitivities_from_an_empty_pool_match_finite_differences(h):
    m = Model.from_dict(HILL)
    t = np.linspace(0, 10, 11)
    names = ["h", "K", "vmax"]
    sim = simulate(m, t, parameters={"h": h}, sensitivities=names, rtol=1e-10, atol=1e-12)
    assert sim.sensitivity("B", "h")[0] == 0.0
    assert_hill_sensitivities_match_central_differences(m, t, sim, h, {"h": h, "K": 1.0, "vmax": 2.0})


def hill_reference(h, t, s=1.0, vmax=2.0, K=1.0, k=0.3):
    """HILL's states by scipy's LSODA (its own finite-difference Jacobian, finite at x > 0)."""
    from scipy.integrate import solve_ivp

    def rhs(_, y):
        a = max(y[0], 0.0)
        flow = vmax * a**h / (K**h + a**h)
        return [s - flow, flow - k * y[1]]
    sol = solve_ivp(rhs, (0, t[-1]), [0.0, 0.0], method="LSODA", t_eval=t, rtol=1e-12, atol=1e-14)
    assert sol.success
    return sol.y.T


# h < 1 (negative cooperativity): the Jacobian entry d/dA of A**h, h A**(h-1), is infinite at the
# empty pool A(0) = 0, although the solution (the influx pushes A off 0) is unique and smooth after t = 0
@pytest.mark.parametrize("engine", ["rosenbrock", "lsoda"])
@pytest.mark.parametrize("h", [0.3, 0.6, 0.9])
def test_hill_below_one_from_an_empty_pool_matches_a_scipy_reference(h, engine, monkeypatch):
    if engine == "lsoda":
        no_numba(monkeypatch)
    m = Model.from_dict(HILL)
    t = np.linspace(0, 10, 11)
    sim = simulate(m, t, parameters={"h": h}, rtol=1e-10, atol=1e-12)
    assert kinetics.compile_model(m).numerical_engine == engine
    np.testing.assert_allclose(np.c_[sim["A"], sim["B"]], hill_reference(h, t), rtol=0, atol=1e-9)


@pytest.mark.parametrize("engine", ["rosenbrock", "lsoda"])
@pytest.mark.parametrize("h", [0.4, 0.7])
def test_hill_below_one_sensitivities_from_an_empty_pool_match_finite_differences(h, engine, monkeypatch):
    """The sensitivities start at 0 (J S is taken as 0 there, not inf * 0) and stay finite."""
    if engine == "lsoda":
        no_numba(monkeypatch)
    m = Model.from_dict(HILL)
    t = np.linspace(0, 10, 11)
    values = {"h": h, "K": 1.0, "vmax": 2.0, "s": 1.0}
    sim = simulate(m, t, parameters={"h": h}, sensitivities=list(values), rtol=1e-10, atol=1e-12)
    for name in values:
        assert sim.sensitivity("A", name)[0] == 0.0
    assert_hill_sensitivities_match_central_differences(m, t, sim, h, values)


@pytest.mark.parametrize("sensitivities", [None, ["h", "vmax"]])
@pytest.mark.parametrize("bad", [{"K": -1.0}, {"h": -0.5}])
def test_a_hill_term_undefined_at_its_parameters_is_still_not_finite(bad, sensitivities):
    """The Jacobian's guard at an empty pool does not reach the right-hand side: a negative K
    (K**h is NaN) or h (A**h is infinite at A = 0) still fails with the not-finite message."""
    with pytest.raises(SolverError, match="not finite"):
        simulate(Model.from_dict(HILL), np.linspace(0, 10, 11), parameters={"h": 0.6, **bad}, sensitivities=sensitivities)


def test_a_square_root_outflow_from_an_empty_pool_matches_its_closed_form():
    """dX/dt = s - k sqrt(X), X(0) = 0 (d sqrt(X)/dX infinite at 0): with u = sqrt(X),
    t = -2 u / k - 2 s / k**2 log(1 - k u / s), solved for u at each output time."""
    from scipy.optimize import brentq
    s, k = 1.0, 0.8
    m = Model("sqrt")
    m.add_compartment("X", initial=0.0)
    m.add_parameter("s", s)
    m.add_parameter("k", k)
    m.add_flow("influx", "s", target="X")
    m.add_flow("outflux", "k * sqrt(X)", source="X")
    t = np.linspace(0, 6, 13)
    sim = simulate(m, t, sensitivities=["k"], rtol=1e-10, atol=1e-12)

    def sqrt_x(time, k=k):
        if time == 0:
            return 0.0
        u_max = s / k
        return brentq(lambda u: -2 * u / k - 2 * s / k**2 * math.log1p(-k * u / s) - time, 0, u_max * (1 - 1e-15),
                      xtol=1e-15, rtol=1e-15)
    assert_close(sim["X"], np.array([sqrt_x(ti) ** 2 for ti in t]), 1e-8)
    step = 1e-5
    fd = np.array([(sqrt_x(ti, k + step) ** 2 - sqrt_x(ti, k - step) ** 2) / (2 * step) for ti in t])
    assert_close(sim.sensitivity("X", "k"), fd, 1e-6)


@pytest.mark.parametrize("h", [0.5, 0.7])
def test_pool_emptied_by_a_fractional_power(tmp_path, h):
    # X' = -k X**h with h < 1 empties X at t* = 1 / ((1 - h) k): X = (1 - (1 - h) k t)**(1 / (1 - h))
    # before, 0 after. As X**h the integrator steps slightly below 0, where the power is NaN:
    # the error names the pool and the remedy; as max(X, 0)**h the solution is the closed form
    # (to the integrator's tolerance, a few atol below 0 after t*)
    text = f"""name = "drain"
time_unit = "h"

[compartments]
X = {{ initial = 1.0 }}

[parameters]
k = {{ value = 1.0, min = 1e-3, max = 10 }}
h = {{ value = {h}, min = 0.1, max = 1 }}

[flows]
out = {{ from = "X", rate = "k * X**h" }}
"""
    times = np.linspace(0.0, 4.0, 17)
    with pytest.raises(SolverError, match=r"fractional power of X.*max\(X, 0\)\*\*h"):
        simulate(write_model(tmp_path, text), times)
    guarded = simulate(write_model(tmp_path, text.replace("k * X**h", "k * max(X, 0)**h"), "guarded.toml"), times)
    x = guarded.to_frame().query("name == 'X'")["value"].to_numpy()
    t_star = 1.0 / (1.0 - h)
    want = np.where(times < t_star, np.clip(1.0 - (1.0 - h) * times, 0.0, None) ** (1.0 / (1.0 - h)), 0.0)
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-9)
    assert kinetics.compile_model(kinetics.load_model(write_model(tmp_path, text, "again.toml"))
                                  ).pools_under_fractional_powers == ["X"]
