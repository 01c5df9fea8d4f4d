"""Simulation against hand-computed solutions: decay, chains, conservation, doses, infusions,
switches; exact versus numerical path; sensitivities versus finite differences."""

import math

import numpy as np
import pytest

import kinetics
from kinetics import Model, SolverError, simulate
from kinetics.model.library import bundled_models


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


def test_observable_sensitivity_chain_rule():
    m = one_compartment(k=0.5, x0=100.0)
    m.add_parameter("V", 2.0, min=0.1, max=10, unit="mL", fixed=True)
    m.add_observable("conc", "X / V", unit="particles/mL")
    sim = simulate(m, T, sensitivities=["k", "V"])
    np.testing.assert_allclose(sim.sensitivity("conc", "k"), -T * 100 * np.exp(-0.5 * T) / 2.0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim.sensitivity("conc", "V"), -100 * np.exp(-0.5 * T) / 4.0, rtol=1e-10)


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

    from kinetics.numerics import rosenbrock
    monkeypatch.setattr(rosenbrock, "numba_available", lambda: False)
    model = saturable_model()
    sim = simulate(model, T, sensitivities=["Vmax"], rtol=1e-10, atol=1e-12)
    assert kinetics.compile_model(model)._numeric["engine"] == "lsoda"
    Vmax, Km, P0 = 40.0, 60.0, 500.0
    exact = Km * np.real(lambertw(P0 / Km * np.exp((P0 - Vmax * T) / Km)))
    assert_close(sim["P"], exact, 1e-7)
    h = 1e-4
    up = Km * np.real(lambertw(P0 / Km * np.exp((P0 - (Vmax + h) * T) / Km)))
    down = Km * np.real(lambertw(P0 / Km * np.exp((P0 - (Vmax - h) * T) / Km)))
    assert_close(sim.sensitivity("P", "Vmax"), (up - down) / (2 * h), 1e-5)
