"""Model comparison: criteria against their formulas, weights, likelihood-ratio tests,
refusals, and model selection on synthetic data."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from kinetics import KineticsError, Model, simulate
from kinetics.analysis.compare import akaike_weights, compare
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import Condition, FitProblem


def fake_result(folder, loglik, n_free, n_noise=1, n_data=20, data_sha="d1", noise="proportional", model_sha="m1",
                free=("a",)):
    k = n_free + n_noise
    aic = 2 * k - 2 * loglik
    result = {
        "model": {"name": folder.name, "sha256": model_sha},
        "data": {"path": None, "sha256": data_sha, "n_points": n_data},
        "noise": {"model": noise},
        "parameters": {name: {"value": 1.0, "free": name in free} for name in ("a", "b", "c")},
        "statistics": {"loglik": loglik, "aic": aic, "aicc": aic + 2 * k * (k + 1) / (n_data - k - 1),
                       "bic": k * math.log(n_data) - 2 * loglik, "n_data": n_data, "n_free": n_free, "n_noise": n_noise},
    }
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_criteria_weights_and_lrt_by_hand(tmp_path):
    small = fake_result(tmp_path / "small", loglik=-30.0, n_free=1, free=("a",))
    big = fake_result(tmp_path / "big", loglik=-25.0, n_free=3, free=("a", "b", "c"))
    table = compare([small, big]).table.set_index("model")
    # hand computation: k = 2 and 4, N = 20
    aicc_small = 2 * 2 + 60 + 2 * 2 * 3 / 17
    aicc_big = 2 * 4 + 50 + 2 * 4 * 5 / 15
    assert table.loc["small", "aicc"] == pytest.approx(aicc_small)
    assert table.loc["big", "aicc"] == pytest.approx(aicc_big)
    assert table.loc["small", "bic"] == pytest.approx(2 * math.log(20) + 60)
    w_big = 1 / (1 + math.exp(-0.5 * (aicc_small - aicc_big)))
    assert table.loc["big", "weight"] == pytest.approx(w_big)
    assert table["weight"].sum() == pytest.approx(1.0)
    tests = compare([small, big]).tests
    assert len(tests) == 1  # same model hash, free set strictly contained: nested, detected
    row = tests.iloc[0]
    assert (row["smaller"], row["larger"], row["df"]) == ("small", "big", 2)
    assert row["statistic"] == pytest.approx(10.0)
    assert row["p_value"] == pytest.approx(math.exp(-5.0))  # chi2 sf with 2 dof = exp(-x/2)


def test_akaike_weights_formula():
    w = akaike_weights([10.0, 12.0, 20.0])
    raw = np.exp(-0.5 * np.array([0.0, 2.0, 10.0]))
    np.testing.assert_allclose(w, raw / raw.sum())


def test_refuses_different_data(tmp_path):
    a = fake_result(tmp_path / "a", -10, 1, data_sha="aaaa")
    b = fake_result(tmp_path / "b", -9, 2, data_sha="bbbb")
    with pytest.raises(KineticsError, match="different data"):
        compare([a, b])


def test_refuses_different_noise_models(tmp_path):
    a = fake_result(tmp_path / "a", -10, 1, noise="constant")
    b = fake_result(tmp_path / "b", -9, 2, noise="proportional")
    with pytest.raises(KineticsError, match="different noise models"):
        compare([a, b])


def test_missing_result_folder_is_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    a = fake_result(tmp_path / "a", -10, 1)
    with pytest.raises(KineticsError, match="no result.json"):
        compare([a, tmp_path / "empty"])


def one_compartment():
    m = Model("one_compartment")
    m.add_compartment("plasma", 0.0)
    m.add_parameter("k_el", 1.0, min=1e-3, max=100)
    m.add_flow("elimination", "k_el * plasma", source="plasma")
    return m


def two_compartment():
    m = Model("two_compartment")
    m.add_compartment("plasma", 0.0)
    m.add_compartment("tissue", 0.0)
    m.add_parameter("k_el", 1.0, min=1e-3, max=100)
    m.add_parameter("k_pt", 1.0, min=1e-3, max=100)
    m.add_parameter("k_tp", 0.1, min=1e-4, max=100)
    m.add_flow("elimination", "k_el * plasma", source="plasma")
    m.add_flow("extravasation", "k_pt * plasma", "plasma", "tissue")
    m.add_flow("return_flow", "k_tp * tissue", "tissue", "plasma")
    return m


TIMES = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 18, 24])
DOSE = [{"compartment": "plasma", "amount": 100.0, "time": 0.0}]


def synthetic(model, truth, seed):
    sim = simulate(model, TIMES, parameters=truth, doses=DOSE)
    rng = np.random.default_rng(seed)
    values = sim["plasma"] * (1 + 0.1 * rng.standard_normal(len(TIMES)))
    return pd.DataFrame({"time": TIMES, "observable": "plasma", "value": values})


def fit_variant(model, data, free):
    problem = FitProblem(model, data, free, conditions=[Condition("default", doses=DOSE)], noise="proportional")
    return fit(problem, multistart=3, seed=0, profiles=False, progress=False, executor=None)


def test_model_selection_picks_the_generating_variant():
    """Generate from each variant in turn (25 + 25 seeded replicates); the generating variant must
    get the largest AICc weight in at least 90 % of them."""
    generators = [
        (one_compartment(), {"k_el": 0.8}),
        (two_compartment(), {"k_el": 0.5, "k_pt": 3.0, "k_tp": 0.3}),
    ]
    correct = 0
    total = 0
    for gen_index, (model, truth) in enumerate(generators):
        for seed in range(25):
            data = synthetic(model, truth, seed)
            fits = [fit_variant(one_compartment(), data, ["k_el"]),
                    fit_variant(two_compartment(), data, ["k_el", "k_pt", "k_tp"])]
            table = compare(fits, labels=["one", "two"]).table
            correct += table.iloc[0]["model"] == ["one", "two"][gen_index]
            total += 1
    print(f"generating variant selected in {correct}/{total} replicates")
    assert correct / total >= 0.9


def test_compare_from_saved_folders_with_plots(tmp_path):
    data = synthetic(two_compartment(), {"k_el": 0.5, "k_pt": 3.0, "k_tp": 0.3}, 1)
    path = tmp_path / "data.csv"
    data.to_csv(path, index=False)
    folders = []
    for name, model, free in (("one", one_compartment(), ["k_el"]), ("two", two_compartment(), ["k_el", "k_pt", "k_tp"])):
        problem = FitProblem(model, str(path), free, conditions=[Condition("default", doses=DOSE)], noise="proportional")
        result = fit(problem, multistart=2, profiles=False, progress=False, executor=None)
        result.save(tmp_path / name)
        folders.append(tmp_path / name)
    comparison = compare(folders)
    assert comparison.table.iloc[0]["model"] == "two"
    assert "Best supported: two" in comparison.report()
    assert comparison.plot_fits() is not None
    assert comparison.plot_weights() is not None
