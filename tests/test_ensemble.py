"""simulate_many / Ensemble: agreement with single simulate calls (affine batched path, doses,
infusions, fixed-time events, nonlinear threaded path, triggered events), failure isolation,
tables, plots and input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import kinetics
from kinetics.errors import KineticsWarning, ModelError

from conftest import MODELS_DIR

TIMES = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 24.0, 48.0])


def _random_sets(model, n, spread=0.5, seed=0):
    compiled = kinetics.compile_model(model)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: value * np.exp(spread * rng.standard_normal(n))
                         for name, value in zip(compiled.parameter_names, compiled.default_parameters)
                         if name not in compiled.computed_parameters})


def _single(model, parameters, **kwargs):
    sim = kinetics.simulate(model, TIMES, parameters, **kwargs)
    return np.concatenate([sim.states, sim.observables], axis=1)


def _assert_agrees(ensemble, model, sets, **kwargs):
    for s in range(len(sets)):
        reference = _single(model, sets.iloc[s].to_dict(), **kwargs)
        scale = np.abs(reference).max(axis=0) + 1e-300
        assert np.all(np.abs(ensemble.values[s] - reference) <= 1e-9 * scale), f"set {s}"


DOSES = [{"compartment": "plasma", "amount": 1e9, "time": 5.0},
         {"compartment": "plasma", "rate": 1e8, "start": 1.0, "end": 30.0}]
EVENTS = [{"time": 10.0, "set": {"secretion_rate": "secretion_rate * 0.5"}}]


@pytest.mark.parametrize("name, kwargs", [
    ("lifecycle", {}),
    ("lifecycle", {"doses": DOSES, "events": EVENTS}),
    ("circulation_2c", {"doses": [{"compartment": "plasma", "amount": 100.0, "time": 0.0}]}),
    ("exo_linear", {"initial": {"EE": "s_endo / k_mat"}}),
    ("exo_sat", {}),                                           # nonlinear: batched integrator
    ("exo_sat", {"doses": [{"compartment": "P", "amount": 500.0, "time": 3.0}],
                 "events": [{"time": 12.0, "set": {"Vmax": "Vmax * 2"}}]}),
])
def test_agrees_with_single_simulations(name, kwargs):
    model = kinetics.load_model(MODELS_DIR / f"{name}.toml")
    sets = _random_sets(model, 25)
    ensemble = kinetics.simulate_many(model, TIMES, sets, **kwargs)
    assert ensemble.values.shape == (25, len(TIMES), len(ensemble.names))
    assert not ensemble.failed.any()
    _assert_agrees(ensemble, model, sets, **kwargs)


def test_triggered_events_loop_over_sets_and_agree():
    model = kinetics.load_model(MODELS_DIR / "receptor_uptake.toml")
    sets = _random_sets(model, 3, spread=0.2)
    ensemble = kinetics.simulate_many(model, TIMES, sets)
    _assert_agrees(ensemble, model, sets)


def test_ill_conditioned_sets_fall_back_to_the_matrix_exponential():
    """Equal rates along the chain make A defective: the eigen path declines for those sets,
    which must still match simulate (expm) while the others take the eigen path."""
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    sets = _random_sets(model, 6)
    # early endosome out-rate (recycling + maturation) equal to the MVB out-rate (degradation + secretion)
    sets.loc[::2, "degradation_rate"] = sets.loc[::2, "recycling_rate"] + sets.loc[::2, "maturation_rate"] - sets.loc[::2, "secretion_rate"]
    assert (sets["degradation_rate"] > 0).all()
    from kinetics.numerics.linear import eigen_decomposition
    compiled = kinetics.compile_model(model)
    declined = [eigen_decomposition(compiled.affine_matrices(compiled.parameter_vector(row))[0]) is None
                for row in sets.to_dict("records")]
    assert declined == [True, False] * 3
    ensemble = kinetics.simulate_many(model, TIMES, sets)
    _assert_agrees(ensemble, model, sets)


def test_dict_input_and_defaults_for_missing_names():
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    ensemble = kinetics.simulate_many(model, TIMES, {"secretion_rate": [0.05, 0.1, 0.2]})
    assert ensemble.parameters["secretion_rate"].tolist() == [0.05, 0.1, 0.2]
    assert (ensemble.parameters["extravasation_rate"] == model.parameters["extravasation_rate"].value).all()
    for s, k in enumerate([0.05, 0.1, 0.2]):
        np.testing.assert_allclose(ensemble["plasma"][s], kinetics.simulate(model, TIMES, {"secretion_rate": k})["plasma"],
                                   rtol=1e-12)


def test_a_failing_set_is_marked_and_the_others_kept():
    model = kinetics.load_model(MODELS_DIR / "exo_sat.toml")
    sets = pd.DataFrame({"k_sec": [0.2, np.nan, 0.3], "k_tp": [0.5, 0.5, 0.5]})
    with pytest.warns(KineticsWarning, match="1 of 3 parameter sets"):
        ensemble = kinetics.simulate_many(model, TIMES, sets)
    assert ensemble.failed.tolist() == [False, True, False]
    assert "k_sec" in ensemble.messages[1]
    assert np.isnan(ensemble.values[1]).all() and np.isfinite(ensemble.values[[0, 2]]).all()
    np.testing.assert_allclose(ensemble.values[2], _single(model, {"k_sec": 0.3}), rtol=1e-12)


def test_overflow_of_one_affine_set_is_isolated():
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    # a negative clearance and exchange: plasma grows like exp(50 * 48), beyond the float range
    sets = {"macrophage_clearance_rate": [0.6, -50.0, 0.7], "extravasation_rate": [3.3, -50.0, 3.3]}
    with pytest.warns(KineticsWarning):
        ensemble = kinetics.simulate_many(model, TIMES, sets)
    assert ensemble.failed.tolist() == [False, True, False]
    assert "not finite" in ensemble.messages[1]
    assert np.isfinite(ensemble.values[[0, 2]]).all()


def test_quantiles_and_frames():
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    sets = _random_sets(model, 50)
    ensemble = kinetics.simulate_many(model, TIMES, sets, observables=["plasma_conc"])
    assert ensemble.names == list(kinetics.compile_model(model).state_names) + ["plasma_conc"]
    table = ensemble.quantiles([0.1, 0.5, 0.9])
    assert len(table) == 3 * len(TIMES) * len(ensemble.names)
    assert list(table.columns) == ["time", "name", "quantile", "value"]
    median = table[(table["name"] == "plasma_conc") & (table["quantile"] == 0.5)]["value"].to_numpy()
    np.testing.assert_allclose(median, np.median(ensemble["plasma_conc"], axis=0))
    frame = ensemble.to_frame(["plasma"])
    assert len(frame) == 50 * len(TIMES)
    np.testing.assert_array_equal(frame[frame["set"] == 3]["value"].to_numpy(), ensemble["plasma"][3])


def test_plot_draws_median_and_band():
    import matplotlib.pyplot as plt
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    ensemble = kinetics.simulate_many(model, TIMES, _random_sets(model, 20))
    ax = ensemble.plot()
    assert [line.get_label().split(" [")[0] for line in ax.get_lines()] == ["plasma_conc", "secretion_flux"]
    assert len(ax.collections) == 2
    assert ax.get_xlabel() == f"time [{model.time_unit}]" and ax.get_ylabel() == "value"
    plt.close(ax.figure)
    ax = ensemble.plot(["plasma"])
    assert ax.get_ylabel() == f"plasma [{ensemble.units['plasma']}]"
    plt.close(ax.figure)


@pytest.mark.parametrize("sets, match", [
    ({"secretion_rat": [0.1, 0.2]}, "secretion_rat.*secretion_rate"),
    ({"secretion_rate": [0.1, 0.2], "return_rate": [1.0]}, "return_rate"),
    ({"secretion_rate": ["fast", "slow"]}, "secretion_rate"),
    ({"secretion_rate": [[0.1, 0.2]]}, "secretion_rate"),
    ({}, "no parameter"),
    ([0.1, 0.2], "DataFrame"),
])
def test_bad_parameter_sets_name_the_problem(sets, match):
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    with pytest.raises(ModelError, match=match):
        kinetics.simulate_many(model, TIMES, sets)


def test_unknown_observable_and_output_names():
    model = kinetics.load_model(MODELS_DIR / "lifecycle.toml")
    with pytest.raises(ModelError, match="plasma_con"):
        kinetics.simulate_many(model, TIMES, {"secretion_rate": [0.1]}, observables=["plasma_con"])
    ensemble = kinetics.simulate_many(model, TIMES, {"secretion_rate": [0.1]})
    with pytest.raises(KeyError, match="plasma_conc"):
        ensemble["plasma_con"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repr(ensemble).startswith("<Ensemble of 'lifecycle': 1 sets")


def test_nonlinear_sets_equal_single_simulations_to_the_last_bit():
    """The lock-step integrator runs, per set, the operations of a single simulation: the same
    numbers (70 sets: several lock-step blocks, a block not full)."""
    model = kinetics.load_model(MODELS_DIR / "exo_sat.toml")
    sets = _random_sets(model, 70, seed=3)
    ensemble = kinetics.simulate_many(model, TIMES, sets)
    for s in range(len(sets)):
        np.testing.assert_array_equal(ensemble.values[s], _single(model, sets.iloc[s].to_dict()), err_msg=f"set {s}")


def test_a_model_ill_conditioned_everywhere_goes_straight_to_the_matrix_exponential(monkeypatch):
    """A non-normal chain of 16 compartments (eigenvectors conditioned ~1e8): the eigen path
    declines the probe's sets, so the other sets are never decomposed; every set still agrees
    with simulate."""
    from kinetics.numerics import linear_batch
    from kinetics.simulation import ensemble as ensemble_module
    m = kinetics.Model("chain_16", "non-normal chain")
    for i in range(1, 17):
        m.add_compartment(f"X{i}", 0.0)
    m.add_parameter("s_in", 1000.0)
    m.add_parameter("k_back", 0.1)
    for i, rate in enumerate(np.linspace(0.5, 2.0, 16), start=1):
        m.add_parameter(f"k{i}", float(rate))
    m.add_flow("source", "s_in", target="X1")
    for i in range(1, 16):
        m.add_flow(f"fwd{i}", f"k{i} * X{i}", source=f"X{i}", target=f"X{i + 1}")
        m.add_flow(f"back{i}", f"k_back * X{i + 1}", source=f"X{i + 1}", target=f"X{i}")
    m.add_flow("out", "k16 * X16", source="X16")
    sets = _random_sets(m, ensemble_module.EIGEN_PROBE + 8, spread=0.1)
    decomposed = []
    real_solve_sets = linear_batch.solve_sets
    monkeypatch.setattr(linear_batch, "solve_sets", lambda A, *args: (decomposed.append(len(A)), real_solve_sets(A, *args)))
    ensemble = kinetics.simulate_many(m, TIMES, sets)
    assert decomposed == [ensemble_module.EIGEN_PROBE]
    _assert_agrees(ensemble, m, sets)
