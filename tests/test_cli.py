"""The ``kinetics`` command line, called in-process through ``kinetics.cli.main`` (plus one run
of the installed console script)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kinetics import KineticsWarning, ModelError, load_model, simulate
from kinetics.cli import main

from conftest import COMPARTMENTS, MODELS_DIR, OBSERVABLES, REPO, variant, write_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_paragraph_error(code, out, err, *fragments):
    assert code == 1
    assert "Traceback" not in err and "Traceback" not in out
    text = err.strip()
    assert text.startswith("error: ")
    assert "\n\n" not in text, "the error is more than one paragraph"
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


# ------------------------------------------------------------------ models
def test_models_lists_every_bundled_model(capsys):
    code, out, err = run(capsys, "models")
    assert code == 0
    assert err == ""
    names = sorted(p.stem for p in MODELS_DIR.glob("*.toml"))
    assert names, "no bundled models found"
    listed = [line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith("(")]
    assert listed == names
    assert f"({len(names)} models in" in out
    # each line carries the start of the model's description
    lifecycle = next(line for line in out.splitlines() if line.startswith("lifecycle "))
    assert "lifecycle" in lifecycle and len(lifecycle.split(None, 1)[1]) > 10


# ------------------------------------------------------------------ simulate
def test_simulate_prints_a_table(capsys, model_file):
    code, out, err = run(capsys, "simulate", model_file, "--t-end", 4, "--points", 5)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["time", *COMPARTMENTS, *OBSERVABLES]
    assert len(lines) == 1 + 5
    assert [float(line.split()[0]) for line in lines[1:]] == [0, 1, 2, 3, 4]
    # EE(t) = s/k + (EE0 - s/k) exp(-k t) with s = 10, k = 0.5, EE0 = 100
    assert float(lines[2].split()[1]) == pytest.approx(20 + 80 * math.exp(-0.5), rel=1e-5)


def test_simulate_accepts_a_bundled_model_name(capsys):
    code, out, err = run(capsys, "simulate", "exo_linear", "--t-end", 2, "--points", 3)
    assert code == 0, err
    assert out.splitlines()[0].split()[0] == "time"
    assert "EE" in out.splitlines()[0].split()


def test_simulate_out_writes_the_wide_csv(capsys, tmp_path, model_file):
    out_csv = tmp_path / "sub" / "result.csv"
    code, out, err = run(capsys, "simulate", model_file, "--t-end", 10, "--points", 11, "--out", out_csv)
    assert code == 0, err
    assert str(out_csv) in out
    table = pd.read_csv(out_csv)
    model = load_model(model_file)
    assert list(table.columns) == ["time", *model.state_names, *model.observable_names]
    times = np.linspace(0, 10, 11)
    np.testing.assert_allclose(table["time"], times)
    expected = simulate(model, times)
    for name in [*model.state_names, *model.observable_names]:
        np.testing.assert_allclose(table[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)
    # the plasma observable really is P / V
    np.testing.assert_allclose(table["plasma_conc"], table["P"] / 2.0, rtol=1e-9, atol=1e-12)
    assert [p.name for p in out_csv.parent.iterdir()] == ["result.csv"]  # no temporary file left


def test_simulate_out_for_a_bundled_model_has_all_columns(capsys, tmp_path):
    out_csv = tmp_path / "culture.csv"
    code, _, err = run(capsys, "simulate", "culture", "--points", 5, "--out", out_csv)
    assert code == 0, err
    model = load_model(MODELS_DIR / "culture.toml")
    assert model.observable_names, "culture should have observables"
    table = pd.read_csv(out_csv)
    assert list(table.columns) == ["time", *model.state_names, *model.observable_names]
    assert len(table) == 5 and table["time"].iloc[-1] == 48.0


def test_simulate_plot_writes_a_png(capsys, tmp_path, model_file):
    png = tmp_path / "plot.png"
    code, out, err = run(capsys, "simulate", model_file, "--points", 11, "--plot", png, "--all")
    assert code == 0, err
    assert str(png) in out
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000


def read_csv_run(capsys, tmp_path, model_file, *extra, name="r.csv"):
    path = tmp_path / name
    code, _, err = run(capsys, "simulate", model_file, "--t-end", 6, "--points", 7, "--out", path, *extra)
    assert code == 0, err
    return pd.read_csv(path)


def test_set_changes_the_result(capsys, tmp_path, model_file):
    base = read_csv_run(capsys, tmp_path, model_file, name="base.csv")
    changed = read_csv_run(capsys, tmp_path, model_file, "--set", "k_mat=2", "--set", "s_endo=50", name="set.csv")
    assert not np.allclose(base["EE"], changed["EE"])
    # EE(t) = s/k + (EE0 - s/k) exp(-k t), now with s = 50, k = 2
    t = changed["time"].to_numpy()
    np.testing.assert_allclose(changed["EE"], 25 + 75 * np.exp(-2 * t), rtol=1e-8)
    expected = simulate(load_model(model_file), t, parameters={"k_mat": 2.0, "s_endo": 50.0})
    np.testing.assert_allclose(changed["P"], expected["P"], rtol=1e-9, atol=1e-9)


def test_dose_adds_a_bolus(capsys, tmp_path, model_file):
    base = read_csv_run(capsys, tmp_path, model_file, name="base.csv")
    dosed = read_csv_run(capsys, tmp_path, model_file, "--dose", "P=1e10@2", name="dose.csv")
    t = base["time"].to_numpy()
    extra = (dosed["P"] - base["P"]).to_numpy()
    # P is cleared at k_cl = 1/h and feeds nothing else, so the bolus adds 1e10 exp(-(t - 2))
    expected = np.where(t >= 2, 1e10 * np.exp(-(t - 2)), 0.0)
    np.testing.assert_allclose(extra, expected, rtol=1e-8, atol=1e-3)
    np.testing.assert_allclose(dosed["EE"], base["EE"], rtol=1e-10)


def test_dose_defaults_to_time_zero(capsys, tmp_path, model_file):
    dosed = read_csv_run(capsys, tmp_path, model_file, "--dose", "P=1000", name="dose.csv")
    assert dosed["P"].iloc[0] == pytest.approx(1000, rel=1e-9)


def test_warnings_do_not_fail_the_command(capsys, tmp_path):
    path = write_model(tmp_path, variant("V      = {", "k_unused = { value = 3 }\nV      = {"))
    with pytest.warns(KineticsWarning, match=r"\[parameters\.k_unused\] is not used"):
        code, out, err = run(capsys, "simulate", path, "--points", 3)
    assert code == 0
    assert "Traceback" not in err
    assert out.splitlines()[0].split()[0] == "time"


# ------------------------------------------------------------------ errors
def test_unknown_model_name_suggests_the_right_one(capsys):
    code, out, err = run(capsys, "simulate", "lifecyle")
    assert_one_paragraph_error(code, out, err, "'lifecyle' is neither a model file nor a bundled model",
                               "did you mean 'lifecycle'?", "kinetics models")
    assert out == ""


def test_missing_model_file(capsys, tmp_path):
    path = tmp_path / "nope.toml"
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, f"{path}: model file not found")


@pytest.mark.parametrize("bad, fragment", [
    ("k_mat", "--set 'k_mat': expected name=value"),
    ("k_mat=abc", "--set 'k_mat=abc': 'abc' is not a number"),
    ("k_mat=", "is not a number"),
])
def test_bad_set_syntax(capsys, model_file, bad, fragment):
    code, out, err = run(capsys, "simulate", model_file, "--set", bad)
    assert_one_paragraph_error(code, out, err, fragment)


def test_unknown_parameter_in_set(capsys, model_file):
    code, out, err = run(capsys, "simulate", model_file, "--set", "k_matt=3")
    assert_one_paragraph_error(code, out, err, "'k_matt'", "did you mean 'k_mat'?")


@pytest.mark.parametrize("bad, fragment", [
    ("P1e10", "--dose 'P1e10'"),
    ("P=lots", "--dose 'P=lots'"),
    ("Q=1e10", "unknown compartment 'Q'"),
])
def test_bad_dose(capsys, model_file, bad, fragment):
    code, out, err = run(capsys, "simulate", model_file, "--dose", bad)
    assert_one_paragraph_error(code, out, err, fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--points", "1"], "--points must be at least 2"),
    (["--t-end", "0"], "--t-end must be positive"),
])
def test_bad_time_grid(capsys, model_file, args, fragment):
    code, out, err = run(capsys, "simulate", model_file, *args)
    assert_one_paragraph_error(code, out, err, fragment)


def test_malformed_model_file(capsys, tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"'))
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, str(path), "[flows.maturation]", "k_matt * EE", "did you mean 'k_mat'?")


def test_model_file_with_several_problems_is_still_one_paragraph(capsys, tmp_path):
    text = variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"')
    text = variant("initial = 100", "initial = -5", text)
    path = write_model(tmp_path, text)
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, "2 problems", "[flows.maturation]", "[compartments.EE]")


def test_invalid_toml(capsys, tmp_path):
    path = write_model(tmp_path, "name = \n")
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, str(path), "not valid TOML")


def test_model_file_running_code_is_refused(capsys, tmp_path):
    marker = tmp_path / "PWNED"
    path = write_model(tmp_path, variant('rate = "k_sec * MVB"', f"rate = \"__import__('os').system('touch {marker}')\""))
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, "[flows.secretion]")
    assert not marker.exists()


def test_condition_as_value_in_rate_gives_one_paragraph(capsys, tmp_path):
    path = write_model(tmp_path, variant('rate = "k_cl * P"', 'rate = "k_cl * P * (t > 1)"'))
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, "[flows.clearance]")


def test_debug_reraises(capsys, tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"'))
    with pytest.raises(ModelError, match=r"\[flows\.maturation\]"):
        main(["--debug", "simulate", str(path)])


def test_no_output_file_is_left_on_failure(capsys, tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"'))
    out_csv = tmp_path / "out.csv"
    code, _, _ = run(capsys, "simulate", path, "--out", out_csv)
    assert code == 1
    assert not out_csv.exists()


def test_console_script_runs_and_reports_errors(tmp_path):
    script = Path(sys.executable).with_name("kinetics")
    if not script.exists():
        script = REPO / ".venv" / "bin" / "kinetics"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([str(script), "simulate", "lifecyle"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: 'lifecyle' is neither a model file nor a bundled model")
    assert "did you mean 'lifecycle'?" in proc.stderr
