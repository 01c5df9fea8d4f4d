"""The ``kinetics`` command line, called in-process through ``kinetics.cli.main`` (plus one run
of the installed console script)."""

from __future__ import annotations

import errno
import json
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

from conftest import COMPARTMENTS, MODEL_TEXT as MODEL_TEXT_FOR_TABLE, MODELS_DIR, OBSERVABLES, REPO, variant, write_model

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


# ------------------------------------------------------------------ fit, compare, pk, steady on a small case
from conftest import write_fit_case  # noqa: E402


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two fits of the small case (k_el and V free; k_el free only) saved by `kinetics fit`."""
    base = tmp_path_factory.mktemp("fits")
    case = write_fit_case(base / "case")
    for name, extra in (("two_free", []), ("k_only", [])):
        args = ["fit", str(case), "--out", str(base / name), "--no-progress", "--serial", "--no-profiles", *extra]
        if name == "k_only":
            text = (case / "fit.toml").read_text()
            (case / "fit.toml").write_text(text.replace('free = ["k_el", "V"]', 'free = ["k_el"]'))
        assert main(args) == 0
    return base


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"'))
    with pytest.raises(ModelError, match=r"\[flows\.maturation\]"):
        main(["simulate", str(path), "--debug"])


def test_fit_checks_out_before_fitting(capsys, tmp_path, monkeypatch):
    import kinetics.fitting.optimize
    case = write_fit_case(tmp_path / "case")
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setattr(kinetics.fitting.optimize, "fit", lambda *a, **k: pytest.fail("fitted before checking --out"))
    code, out, err = run(capsys, "fit", case, "--out", tmp_path / "file.txt" / "results")
    assert_one_paragraph_error(code, out, err, "--out", "is a file, so no folder can be created")
    code, out, err = run(capsys, "fit", case, "--out", case)
    assert_one_paragraph_error(code, out, err, "holds files kinetics did not write", "fit.toml")


def test_full_disk_while_saving_is_one_paragraph_and_keeps_the_old_result(capsys, tmp_path, monkeypatch, fitted):
    import shutil
    out = tmp_path / "results"
    shutil.copytree(fitted / "two_free", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    code, out_text, err = run(capsys, "fit", fitted / "case", "--out", out, "--no-progress", "--serial", "--no-profiles")
    assert_one_paragraph_error(code, "", err, "No space left on device", "the disk is full")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_compare_names_the_models(capsys, fitted):
    code, out, err = run(capsys, "compare", fitted / "two_free", fitted / "k_only")
    assert code == 0, err
    header = out.splitlines()[1].split()
    assert header[:2] == ["fit", "model"]
    rows = [line.split() for line in out.splitlines()[2:4]]
    assert {r[0] for r in rows} == {"two_free", "k_only"} and {r[1] for r in rows} == {"one_compartment"}
    assert "(model 'one_compartment'" in out


def test_compare_plot_shows_the_data_without_a_condition_column(capsys, tmp_path, fitted):
    from kinetics.compare import compare
    assert "condition" not in pd.read_csv(fitted / "case" / "data.csv").columns
    figure = compare([fitted / "two_free", fitted / "k_only"]).plot_fits()
    data_lines = [line for ax in figure.axes for line in ax.get_lines() if line.get_label() == "data"]
    assert len(data_lines) == 1 and len(data_lines[0].get_xdata()) == 10
    code, out, err = run(capsys, "compare", fitted / "two_free", fitted / "k_only", "--plot", tmp_path / "cmp.svg")
    assert code == 0, err
    assert (tmp_path / "cmp.svg").read_text().lstrip().startswith("<?xml")   # the format follows the extension
    assert (tmp_path / "cmp_weights.svg").exists()


@pytest.mark.parametrize("command", ["pk", "steady"])
def test_intervals_follow_set_values(capsys, fitted, command):
    """With --fit and --set, the interval table is computed at the --set values (the summary
    above it uses them too): k_el held at 3, V varying."""
    from kinetics import load_model
    from kinetics.pk import pk_summary
    model = fitted / "case" / "model.toml"
    extra = ["--dose", "plasma=100", "--observable", "conc"] if command == "pk" else []
    code, out, err = run(capsys, command, model, "--fit", fitted / "two_free", "--set", "k_el=3", "--json", *extra)
    assert code == 0, err
    result = json.loads(out)
    table = {row["quantity"]: row for row in result["uncertainty"]}
    saved = json.loads((fitted / "two_free" / "result.json").read_text())["parameters"]
    values = {"k_el": 3.0, "V": saved["V"]["value"]}
    if command == "pk":
        expected = pk_summary(load_model(model), {"compartment": "plasma", "amount": 100.0}, "conc", values).to_dict()
        assert table["auc_inf"]["estimate"] == pytest.approx(expected["auc_inf"], rel=1e-9)
        assert result["auc_inf"] == pytest.approx(expected["auc_inf"], rel=1e-9)
        # auc = 100 / (V k_el): V still varies, k_el does not
        assert table["auc_inf"]["stderr"] / expected["auc_inf"] == pytest.approx(
            saved["V"]["stderr"] / saved["V"]["value"], rel=0.05)
        assert table["clearance"]["stderr"] / table["clearance"]["estimate"] == pytest.approx(
            saved["V"]["stderr"] / saved["V"]["value"], rel=0.05)
    else:
        assert table["flux elimination"]["estimate"] == pytest.approx(result["fluxes"]["elimination"], abs=1e-12)
    text_code, text, _ = run(capsys, command, model, "--fit", fitted / "two_free", "--set", "k_el=3", *extra)
    assert text_code == 0 and "at k_el = 3 (held fixed" in text


def test_terminal_escapes_in_messages_are_escaped(capsys, tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_matt * EE \\u001b[2J\\u001b]0;owned\\u0007"'))
    code, out, err = run(capsys, "simulate", path)
    assert code == 1
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b[2J" in err


def test_very_long_quoted_text_is_shortened(capsys, tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_mat * EE + ' + " + ".join(["k_matt"] * 20000) + '"'))
    code, out, err = run(capsys, "simulate", path)
    assert_one_paragraph_error(code, out, err, "[flows.maturation]", "characters)")
    assert len(err) < 5000


def write_result(folder, text):
    folder.mkdir()
    (folder / "result.json").write_text(text)
    return folder


# args -> (exit code, fragment of the message); every row: no traceback, one paragraph
BAD_OPTIONS = [
    (["simulate", "{model}", "--rtol", "-1"], 1, "--rtol -1: must be a positive number"),
    (["simulate", "{model}", "--atol", "0"], 1, "--atol 0: must be a positive number"),
    (["simulate", "{model}", "--rtol", "nan"], 1, "--rtol nan"),
    (["simulate", "{model}", "--plot", "x.xyz"], 1, "unsupported image type '.xyz'; use one of"),
    (["simulate", "{model}", "--points", "2e9"], 1, "--points 2000000000: at most 1,000,000"),
    (["simulate", "{model}", "--points", "2.5"], 2, "'2.5' is not a whole number"),
    (["simulate", "{model}", "--t-end", "inf"], 1, "--t-end must be positive"),
    (["fit", "{case}", "--multistart", "-3"], 1, "--multistart -3: must be at least 1"),
    (["fit", "{case}", "--seed", "-1"], 1, "--seed -1: must be at least 0"),
    (["fit", "{case}", "--mcmc", "-5"], 1, "--mcmc -5: must be at least 1"),
    (["pk", "{model}", "--dose", "P=1", "--observable", "P", "--samples", "-1"], 1, "--samples -1: must be at least 0"),
    (["steady", "{model}", "--samples", "-1"], 1, "--samples -1: must be at least 0"),
    (["steady", "{quadratic}"], 1, "is degenerate"),
    (["steady", "{growth}"], 1, "the steady state is unstable"),
    (["compare", "{empty}", "{truncated}"], 1, "no result.json here"),
    (["compare", "{truncated}", "{empty}"], 1, "not a valid result.json"),
    (["compare", "{wrong_types}", "{truncated}"], 1, "'statistics.loglik' must be a number"),
    (["compare", "{list_json}", "{truncated}"], 1, "'the top level' must be a JSON object"),
    (["compare", "{truncated}", "{truncated}", "--plot", "c.xyz"], 1, "unsupported image type"),
]


@pytest.mark.parametrize("argv, expected_code, fragment", BAD_OPTIONS, ids=[" ".join(a[0]) for a in BAD_OPTIONS])
def test_bad_options_and_inputs(capsys, tmp_path, argv, expected_code, fragment):
    growth = "name = 'growth'\n[compartments]\nP = { initial = 1 }\n[parameters]\nk = { value = 0.1 }\n" \
             "[flows]\ngrowth = { to = 'P', rate = 'k * P' }\n"
    paths = {
        "model": write_model(tmp_path, MODEL_TEXT_FOR_TABLE),
        "case": write_fit_case(tmp_path / "case"),
        "quadratic": write_model(tmp_path, growth.replace("k * P", "k * P * P").replace("'growth'", "'quad'", 1), "quad.toml"),
        "growth": write_model(tmp_path, growth, "growth.toml"),
        "empty": tmp_path / "empty",
        "truncated": write_result(tmp_path / "truncated", '{"model": {"name": "m"}, "data": {'),
        "wrong_types": write_result(tmp_path / "wrong_types", json.dumps(
            {"model": {"name": "m"}, "data": {}, "parameters": {}, "statistics": {"loglik": "high"}})),
        "list_json": write_result(tmp_path / "list_json", "[1, 2]"),
    }
    paths["empty"].mkdir()
    try:
        code = main([a.format(**paths) for a in argv])
    except SystemExit as exc:   # argparse's own usage errors exit 2
        code = exc.code
    out, err = capsys.readouterr()
    assert code == expected_code
    assert "Traceback" not in err and "Traceback" not in out
    assert fragment in err
    assert "\n\n" not in err.strip()
