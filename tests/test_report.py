"""Saved results: result.json content (failed starts), whole-folder saves, plots drawn without
touching matplotlib's backend, spreadsheet-safe curves.csv."""

from __future__ import annotations

import errno
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from kinetics import Model, simulate
from kinetics.compare import compare
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import Condition, FitProblem, load_fit_spec

from conftest import write_fit_case


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    return write_fit_case(tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="module")
def with_profiles(case_folder):
    return fit(load_fit_spec(case_folder), profiles=True, progress=False, executor=None)


@pytest.fixture(scope="module")
def without_profiles(case_folder):
    return fit(load_fit_spec(case_folder), profiles=False, progress=False, executor=None)


def blowup_fit():
    """A fit where some starts cannot be simulated (A' = g A^2 - k A explodes for g large)."""
    m = Model("blowup")
    m.add_compartment("A", 1.0)
    m.add_parameter("g", 0.1, min=1e-3, max=10)
    m.add_parameter("k", 1.0, min=1e-3, max=10)
    m.add_flow("growth", "g * A * A", target="A")
    m.add_flow("loss", "k * A", source="A")
    t = np.array([0.5, 1, 2, 3, 4, 6, 8])
    y = simulate(m, t)["A"] * (1 + 0.02 * np.random.default_rng(0).standard_normal(len(t)))
    problem = FitProblem(m, pd.DataFrame({"time": t, "observable": "A", "value": y}), ["g", "k"], noise="proportional")
    return fit(problem, multistart=8, seed=0, profiles=False, progress=False, executor=None)


def test_failed_starts_are_in_result_json(tmp_path):
    result = blowup_fit()
    failed = [i for i, run in enumerate(result.runs) if not np.isfinite(run["rss"])]
    assert failed, "test setup: no start failed"
    result.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    entries = saved["failed_starts"]
    assert [e["start"] for e in entries] == failed
    for entry in entries:
        run = result.runs[entry["start"]]
        assert entry["message"] == run["message"] and "cannot be simulated" in entry["message"]
        start = result.problem.to_natural(np.asarray(run["x"]))
        assert entry["values"] == pytest.approx(dict(zip(result.problem.free, start)))
    report = (tmp_path / "out" / "report.txt").read_text()
    assert f"{len(failed)} start(s) failed" in report and f"start {failed[0]}:" in report


def test_no_failed_starts_is_an_empty_list(with_profiles):
    assert with_profiles.to_dict()["failed_starts"] == []


def test_save_leaves_matplotlib_backend_alone(tmp_path, with_profiles):
    import matplotlib.pyplot as plt
    before = matplotlib.get_backend()
    matplotlib.use("svg")   # stands in for a notebook's inline backend
    try:
        figures = plt.get_fignums()
        with_profiles.save(tmp_path / "out")
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == figures   # nothing left in pyplot's state
    finally:
        matplotlib.use(before)
    assert (tmp_path / "out" / "fit.png").read_bytes().startswith(b"\x89PNG")


def test_result_without_profiles_replaces_one_with_them(tmp_path, with_profiles, without_profiles):
    out = tmp_path / "out"
    with_profiles.save(out)
    assert (out / "profiles.png").exists()
    written = without_profiles.save(out)
    assert not (out / "profiles.png").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert json.loads((out / "result.json").read_text())["profiles"] == {}


def test_full_disk_during_save_keeps_the_old_result(tmp_path, monkeypatch, with_profiles, without_profiles):
    out = tmp_path / "out"
    with_profiles.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(OSError, match="No space left"):
        without_profiles.save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_curves_csv_neutralises_formula_condition_names(tmp_path, case_folder):
    name = '=HYPERLINK("http://example.invalid","x")'
    data = pd.read_csv(case_folder / "data.csv").assign(condition=name)
    problem = load_fit_spec(case_folder)
    folders = []
    for label, free in (("one", ["k_el"]), ("two", ["k_el", "V"])):
        p = FitProblem(problem.model, data, free, conditions=[Condition(name, doses=[{"compartment": "plasma", "amount": 100.0, "time": 0.0}])],
                       noise="proportional")
        fit(p, multistart=1, profiles=False, progress=False, executor=None).save(tmp_path / label)
        folders.append(tmp_path / label)
    text = (tmp_path / "one" / "curves.csv").read_text()
    assert "\n" + name not in text and ",=" not in text
    assert "'" + name.replace('"', '""') in text
    # compare reads the names back as they were
    figure = compare(folders).plot_fits()
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == [f"{name}: conc"]
