"""Model files and the Python API: validation errors that name the file, the entry and the
offending text; the symbolic form; round trips."""

from __future__ import annotations

import math
import warnings

import lmfit
import pytest
import sympy as sp

from kinetics import KineticsWarning, Model, ModelError, compile_model, load_model

from conftest import COMPARTMENTS, MODEL_TEXT, OBSERVABLES, PARAMETERS, model_error, variant, write_model


def sym(name):
    return sp.Symbol(name, real=True)


EE, MVB, P = sym("EE"), sym("MVB"), sym("P")
s_endo, k_mat, k_sec, k_cl, V = (sym(n) for n in PARAMETERS)
EXPECTED_ODES = {"EE": s_endo - k_mat * EE, "MVB": k_mat * EE - k_sec * MVB, "P": k_sec * MVB - k_cl * P}


def build_in_python() -> Model:
    """The same model as MODEL_TEXT, built with the Python API."""
    m = Model("mini", description="A small test model: endosome to MVB to plasma", time_unit="h")
    m.add_compartment("EE", initial=100, unit="particles", description="early endosomes")
    m.add_compartment("MVB", initial=0, unit="particles")
    m.add_compartment("P", initial=0, unit="particles", description="exosomes in plasma")
    m.add_parameter("s_endo", 10, unit="particles/h", min=0, max=1e6)
    m.add_parameter("k_mat", 0.5, unit="1/h", min=1e-3, max=100)
    m.add_parameter("k_sec", 0.2, unit="1/h", min=1e-3, max=100)
    m.add_parameter("k_cl", 1.0, unit="1/h", min=1e-3, max=100, fixed=True)
    m.add_parameter("V", 2.0, unit="mL", fixed=True)
    m.add_flow("endocytosis", "s_endo", target="EE")
    m.add_flow("maturation", "k_mat * EE", source="EE", target="MVB")
    m.add_flow("secretion", "k_sec * MVB", source="MVB", target="P")
    m.add_flow("clearance", "k_cl * P", source="P")
    m.add_observable("plasma_conc", "P / V", unit="particles/mL")
    return m


def assert_same_odes(actual: dict, expected: dict):
    assert list(actual) == list(expected)
    for name in expected:
        assert sp.simplify(actual[name] - expected[name]) == 0, f"d{name}/dt: {actual[name]} != {expected[name]}"


# ------------------------------------------------------------------ the valid model
def test_valid_model_file_loads_without_warnings(model_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(model_file)
    assert model.name == "mini"
    assert model.time_unit == "h"
    assert model.source == str(model_file)
    assert model.state_names == COMPARTMENTS
    assert model.parameter_names == PARAMETERS
    assert model.observable_names == OBSERVABLES
    assert list(model.flows) == ["endocytosis", "maturation", "secretion", "clearance"]
    assert model.validate() == []
    assert len(model.sha256) == 64


def test_odes_are_inflows_minus_outflows(model_file):
    assert_same_odes(load_model(model_file).odes(), EXPECTED_ODES)


def test_name_defaults_to_the_file_stem(tmp_path):
    text = variant('name = "mini"\n', "")
    assert load_model(write_model(tmp_path, text, "my_variant.toml")).name == "my_variant"


def test_parameter_may_be_a_bare_number(tmp_path):
    model = load_model(write_model(tmp_path, variant('V      = { value = 2.0, unit = "mL", fixed = true }', "V = 2.5")))
    assert model.parameters["V"].value == 2.5


def test_initial_may_be_an_expression_of_parameters(tmp_path):
    model = load_model(write_model(tmp_path, variant("initial = 100", 'initial = "s_endo / k_mat"')))
    assert compile_model(model).initial_state(compile_model(model).parameter_vector())[0] == pytest.approx(20.0)


# ------------------------------------------------------------------ bad input, one problem each
def test_unknown_name_in_a_rate(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"'))
    message = model_error(path)
    assert message.startswith(f"{path}: ")
    assert "[flows.maturation]" in message
    assert "rate 'k_matt * EE'" in message
    assert "unknown name 'k_matt'" in message
    assert "did you mean 'k_mat'?" in message


def test_unknown_name_in_an_observable(tmp_path):
    path = write_model(tmp_path, variant('expr = "P / V"', 'expr = "P / Vv"'))
    message = model_error(path)
    assert "[observables.plasma_conc] expr 'P / Vv' uses the unknown name 'Vv' (did you mean 'V'?)" in message


def test_compartment_and_parameter_with_the_same_name(tmp_path):
    path = write_model(tmp_path, variant("V      = {", 'P = { value = 1 }\nV      = {'))
    message = model_error(path)
    assert str(path) in message
    assert "'P' is declared as a parameter and already as a compartment" in message


def test_flow_with_the_name_of_a_compartment(tmp_path):
    path = write_model(tmp_path, variant("clearance   = {", "P = {"))
    message = model_error(path)
    assert "'P' is declared as a flow and already as a compartment" in message


def test_toml_duplicate_keys_are_not_valid_toml(tmp_path):
    path = write_model(tmp_path, variant("V      = {", 'k_sec = { value = 1 }\nV      = {'))
    message = model_error(path)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 15" in message
    assert "no key is written twice" in message


def test_toml_syntax_error(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_sec * MVB"', 'rate = "k_sec * MVB'))
    assert model_error(path).startswith(f"{path}: not valid TOML")


def test_flow_to_a_missing_compartment_suggests_the_right_one(tmp_path):
    path = write_model(tmp_path, variant('to = "MVB", rate', 'to = "MBV", rate'))
    message = model_error(path)
    assert "[flows.maturation] 'to' names the unknown compartment 'MBV' (did you mean 'MVB'?)" in message


def test_flow_from_a_missing_compartment(tmp_path):
    path = write_model(tmp_path, variant('from = "P", rate', 'from = "Plasma", rate'))
    message = model_error(path)
    assert "[flows.clearance] 'from' names the unknown compartment 'Plasma'" in message


def test_flow_with_neither_end(tmp_path):
    path = write_model(tmp_path, variant('endocytosis = { to = "EE", rate', 'endocytosis = { rate'))
    message = model_error(path)
    assert "[flows.endocytosis]" in message and "neither 'from' nor 'to'" in message


def test_flow_from_a_compartment_to_itself(tmp_path):
    path = write_model(tmp_path, variant('from = "P", rate', 'from = "P", to = "P", rate'))
    assert "[flows.clearance] goes from 'P' to itself" in model_error(path)


def test_min_greater_than_max(tmp_path):
    path = write_model(tmp_path, variant('k_mat  = { value = 0.5, unit = "1/h", min = 1e-3, max = 100 }',
                                         'k_mat  = { value = 0.5, unit = "1/h", min = 100, max = 1e-3 }'))
    message = model_error(path)
    assert "[parameters.k_mat] min (100) is greater than max (0.001)" in message


def test_value_outside_bounds(tmp_path):
    path = write_model(tmp_path, variant("k_mat  = { value = 0.5,", "k_mat  = { value = 500,"))
    message = model_error(path)
    assert "[parameters.k_mat] value 500 is outside its bounds [0.001, 100]" in message


def test_value_not_a_number(tmp_path):
    # a string is an expression of other parameters (the general form); a boolean is neither
    path = write_model(tmp_path, variant("V      = { value = 2.0,", 'V      = { value = true,'))
    assert "[parameters.V] 'value' must be a number or an expression string, got True" in model_error(path)
    path = write_model(tmp_path, variant("V      = { value = 2.0,", 'V      = { value = "2 * nope",'))
    assert "[parameters.V] value '2 * nope' uses the unknown name 'nope'" in model_error(path)


def test_value_nan(tmp_path):
    path = write_model(tmp_path, variant("V      = { value = 2.0,", "V      = { value = nan,"))
    assert "[parameters.V] value nan is not a finite number" in model_error(path)


def test_parameter_without_value(tmp_path):
    path = write_model(tmp_path, variant("V      = { value = 2.0,", "V      = {"))
    assert "[parameters.V] has no 'value'" in model_error(path)


def test_fixed_must_be_boolean(tmp_path):
    path = write_model(tmp_path, variant("max = 100, fixed = true", 'max = 100, fixed = "yes"'))
    assert "[parameters.k_cl] 'fixed' must be true or false" in model_error(path)


def test_negative_initial_amount(tmp_path):
    path = write_model(tmp_path, variant("initial = 100", "initial = -5"))
    message = model_error(path)
    assert "[compartments.EE] initial amount -5 is negative" in message


def test_initial_may_not_depend_on_time(tmp_path):
    path = write_model(tmp_path, variant("initial = 100", 'initial = "t"'))
    assert "[compartments.EE] initial 't'" in model_error(path)


def test_unused_parameter_warns_naming_it(tmp_path):
    path = write_model(tmp_path, variant("V      = {", "k_unused = { value = 3 }\nV      = {"))
    with pytest.warns(KineticsWarning) as record:
        model = load_model(path)
    messages = [str(w.message) for w in record if issubclass(w.category, KineticsWarning)]
    assert len(messages) == 1
    assert str(path) in messages[0]
    assert "[parameters.k_unused] is not used" in messages[0]
    assert model.validate() == messages


def test_unknown_key_in_an_entry_suggests_the_right_one(tmp_path):
    path = write_model(tmp_path, variant("k_sec  = { value", "k_sec  = { vale"))
    message = model_error(path)
    assert "[parameters.k_sec] unknown key 'vale' (did you mean 'value'?)" in message
    assert "allowed: description, fixed, max, min, unit, value" in message


def test_unknown_key_in_a_flow(tmp_path):
    path = write_model(tmp_path, variant('from = "P", rate', 'form = "P", rate'))
    message = model_error(path)
    assert "[flows.clearance] unknown key 'form' (did you mean 'from'?)" in message


def test_unknown_top_level_key(tmp_path):
    path = write_model(tmp_path, variant('time_unit = "h"', 'time_unit = "h"\ntimeunit = "h"'))
    message = model_error(path)
    assert "[timeunit] unknown top-level key 'timeunit'" in message and "did you mean 'time_unit'?" in message


def test_section_that_is_not_a_table(tmp_path):
    text = MODEL_TEXT.split("[observables]")[0]
    path = write_model(tmp_path, text.replace('time_unit = "h"', 'time_unit = "h"\nobservables = 3'))
    assert "[observables] must be a table" in model_error(path)


def test_entry_that_is_not_an_inline_table(tmp_path):
    path = write_model(tmp_path, variant('clearance   = { from = "P", rate = "k_cl * P" }', 'clearance = "k_cl * P"'))
    message = model_error(path)
    assert "[flows.clearance] must be an inline table" in message


def test_model_without_compartments(tmp_path):
    path = write_model(tmp_path, 'name = "empty"\n')
    assert "the model has no compartments" in model_error(path)


@pytest.mark.parametrize("section, line, name", [
    ("parameters", "t = { value = 3 }", "t"),
    ("parameters", "exp = { value = 3 }", "exp"),
    ("parameters", "pi = { value = 3 }", "pi"),
    ("compartments", "max = { initial = 1 }", "max"),
])
def test_reserved_names_are_rejected(tmp_path, section, line, name):
    anchor = "V      = {" if section == "parameters" else "P   = {"
    path = write_model(tmp_path, variant(anchor, f"{line}\n{anchor}"))
    message = model_error(path)
    assert f"[{section}.{name}] '{name}' is reserved" in message


@pytest.mark.parametrize("name", ["2k", "k-x", "k x", "lambda", "class"])
def test_invalid_identifiers_are_rejected(tmp_path, name):
    path = write_model(tmp_path, variant("V      = {", f'"{name}" = {{ value = 3 }}\nV      = {{'))
    message = model_error(path)
    assert f"[parameters.{name}] '{name}' is not a valid name" in message


@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w')",
    "eval(\\\"open('{marker}', 'w')\\\")",
    "exec(\\\"open('{marker}', 'w')\\\")",
    "[c for c in ().__class__.__bases__[0].__subclasses__()]",
    "k_sec * MVB + (lambda: open('{marker}', 'w'))()",
])
@pytest.mark.parametrize("entry, old", [
    ("flows.secretion", 'rate = "k_sec * MVB"'),
    ("observables.plasma_conc", 'expr = "P / V"'),
    ("compartments.EE", "initial = 100"),
])
def test_model_file_that_tries_to_run_code_is_rejected_and_nothing_runs(tmp_path, monkeypatch, payload, entry, old):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    code = payload.format(marker=marker)
    key = old.split(" = ")[0]
    path = write_model(tmp_path, variant(old, f'{key} = "{code}"'))
    message = model_error(path)
    assert not marker.exists(), "code in the model file was executed"
    assert str(path) in message
    assert f"[{entry}]" in message
    assert code.replace('\\"', '"')[:30] in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    message = model_error(path)
    assert message == f"{path}: model file not found"


def test_directory_instead_of_a_file(tmp_path):
    message = model_error(tmp_path)
    assert str(tmp_path) in message and "cannot read" in message


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(MODEL_TEXT.replace("early endosomes", "endosomes pr\u00e9coces").encode("latin-1"))
    message = model_error(path)
    assert message.startswith(f"{path}: ")
    assert "UTF-8" in message


def test_several_problems_are_reported_together(tmp_path):
    text = variant('rate = "k_mat * EE"', 'rate = "k_matt * EE"')
    text = variant("initial = 100", "initial = -5", text)
    text = variant('to = "P", rate', 'to = "Q", rate', text)
    path = write_model(tmp_path, text)
    message = model_error(path)
    assert message.startswith(f"{path}: 3 problems:")
    for fragment in ("[compartments.EE] initial amount -5", "[flows.maturation] rate 'k_matt * EE'",
                     "[flows.secretion] 'to' names the unknown compartment 'Q'"):
        assert fragment in message
    assert message.count("\n  - ") == 3


def test_several_entry_problems_are_reported_together(tmp_path):
    text = variant("k_sec  = { value", "k_sec  = { vale")
    text = variant('from = "P", rate', 'form = "P", rate', text)
    text = variant("V      = { value = 2.0,", "V      = {", text)
    path = write_model(tmp_path, text)
    message = model_error(path)
    assert message.startswith(f"{path}: 3 problems:")
    for fragment in ("[parameters.k_sec] unknown key 'vale'", "[flows.clearance] unknown key 'form'",
                     "[parameters.V] has no 'value'"):
        assert fragment in message


def test_unknown_key_and_other_problems_are_reported_together(tmp_path):
    text = variant("k_sec  = { value", "k_sec  = { vale")
    text = variant("initial = 100", "initial = -5", text)
    path = write_model(tmp_path, text)
    message = model_error(path)
    assert "[parameters.k_sec] unknown key 'vale'" in message
    assert "[compartments.EE] initial amount -5 is negative" in message


def test_condition_as_a_value_in_a_rate_is_a_model_error(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_cl * P"', 'rate = "k_cl * P * (t > 1)"'))
    message = model_error(path)
    assert "[flows.clearance]" in message


# ------------------------------------------------------------------ Python API
def test_python_api_builds_the_same_model_as_the_file(model_file):
    from_file = load_model(model_file)
    in_python = build_in_python()
    assert_same_odes(in_python.odes(), from_file.odes())
    assert in_python.to_dict() == from_file.to_dict()
    assert in_python.equations() == from_file.equations()


def test_python_api_accepts_sympy_expressions():
    m = Model("decay")
    m.add_compartment("X", initial=5)
    m.add_parameter("k", 0.3, min=0, max=10)
    X, k = sp.symbols("X k")  # plain symbols are rebound to the model's
    m.add_flow("loss", k * X, source="X")
    assert_same_odes(m.odes(), {"X": -sym("k") * sym("X")})


def test_python_api_errors_name_the_model_and_entry():
    m = build_in_python()
    m.add_flow("leak", "k_lek * P", source="P")
    with pytest.raises(ModelError) as info:
        m.odes()
    message = str(info.value)
    assert message.startswith("model 'mini': ")
    assert "[flows.leak] rate 'k_lek * P'" in message


def test_python_api_duplicate_name_is_reported():
    m = build_in_python()
    m.add_parameter("EE", 1.0)
    with pytest.raises(ModelError, match="'EE' is declared as a parameter and already as a compartment"):
        m.validate()


def test_changes_after_use_are_picked_up():
    m = build_in_python()
    assert_same_odes(m.odes(), EXPECTED_ODES)
    m.add_flow("leak", "k_sec * EE", source="EE")
    assert sp.simplify(m.odes()["EE"] - (s_endo - k_mat * EE - k_sec * EE)) == 0


def test_equations_text(model_file):
    text = load_model(model_file).equations()
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("dEE/dt ") and lines[1].startswith("dMVB/dt") and lines[2].startswith("dP/dt ")
    assert len({line.index("=") for line in lines}) == 1  # aligned
    for line, name in zip(lines, COMPARTMENTS):
        rhs = line.split("=", 1)[1]
        # the printed right-hand side is the ODE
        assert sp.simplify(sp.sympify(rhs, locals={n: sym(n) for n in COMPARTMENTS + PARAMETERS}) - EXPECTED_ODES[name]) == 0


def test_equations_latex(model_file):
    latex = load_model(model_file).equations("latex")
    assert latex.startswith("\\begin{aligned}") and latex.endswith("\\end{aligned}")
    assert "\\frac{d\\,EE}{dt} &=" in latex
    assert "\\frac{d\\,MVB}{dt} &=" in latex
    assert "\\frac{d\\,P}{dt} &=" in latex
    assert "k_{mat}" in latex and "s_{endo}" in latex
    assert latex.count("\\\\") == 2


def test_equations_unknown_format(model_file):
    with pytest.raises(ValueError, match="format"):
        load_model(model_file).equations("html")


def test_to_dict_round_trips(model_file):
    model = load_model(model_file)
    data = model.to_dict()
    again = Model.from_dict(data)
    assert again.to_dict() == data
    assert_same_odes(again.odes(), model.odes())
    assert again.parameters == model.parameters
    assert again.compartments == model.compartments
    assert data["parameters"]["k_cl"]["fixed"] is True
    assert "min" not in data["parameters"]["V"]  # infinite bounds are left out


def test_to_dict_round_trips_sympy_built_functions():
    m = Model("sat")
    m.add_compartment("P", initial=10)
    m.add_parameter("k", 0.5, min=0, max=10)
    m.add_parameter("cap", 2.0)
    P_, k_, cap_, t_ = sp.symbols("P k cap t")
    m.add_flow("clearance", sp.Min(k_ * P_, cap_) * sp.Heaviside(t_ - 1, 1), source="P")
    m.add_observable("size", sp.Abs(P_))
    again = Model.from_dict(m.to_dict())
    assert_same_odes(again.odes(), m.odes())


def test_with_values_returns_a_changed_copy(model_file):
    model = load_model(model_file)
    new = model.with_values(k_mat=2.0, k_sec=500)
    assert new is not model
    assert new.parameters["k_mat"].value == 2.0
    assert model.parameters["k_mat"].value == 0.5  # original untouched
    assert new.parameters["k_sec"].max == 500      # bounds widened to hold the value
    assert new.parameters["k_sec"].min == 1e-3
    assert new.parameter_values() == {"s_endo": 10.0, "k_mat": 2.0, "k_sec": 500.0, "k_cl": 1.0, "V": 2.0}
    assert compile_model(new).parameter_vector()[1] == 2.0


def test_with_values_unknown_parameter(model_file):
    with pytest.raises(ModelError, match=r"unknown parameter 'k_matt' \(did you mean 'k_mat'\?\)"):
        load_model(model_file).with_values(k_matt=1)


def test_make_params_carries_values_bounds_and_fixed_flags(model_file):
    params = load_model(model_file).make_params(k_sec=0.3)
    assert isinstance(params, lmfit.Parameters)
    assert list(params) == PARAMETERS
    assert params["k_mat"].value == 0.5 and params["k_mat"].min == 1e-3 and params["k_mat"].max == 100
    assert params["k_mat"].vary is True
    assert params["k_sec"].value == 0.3  # override
    assert params["k_cl"].vary is False
    assert params["V"].vary is False
    assert params["V"].min == -math.inf and params["V"].max == math.inf
    assert params["s_endo"].min == 0 and params["s_endo"].max == 1e6


# ------------------------------------------------------------------ hostile model files: one ModelError, never a traceback
EE_LINE = 'EE  = { initial = 100, unit = "particles", description = "early endosomes" }'
K_MAT_LINE = 'k_mat  = { value = 0.5, unit = "1/h", min = 1e-3, max = 100 }'
MATURATION = 'maturation  = { from = "EE", to = "MVB", rate = "k_mat * EE" }'

# (case, text replaced, replacement, fragment of the message)
HOSTILE_MODEL_FILES = [
    # values a double cannot hold
    ("exp(1000) in a rate", '"k_mat * EE"', '"k_mat * EE * exp(1000)"',
     "[flows.maturation] rate 'k_mat * EE * exp(1000)' contains exp(1000), which is beyond the floating-point range"),
    ("exp(1000) as an initial value", "initial = 100,", 'initial = "exp(1000)",',
     "[compartments.EE] initial 'exp(1000)' contains exp(1000)"),
    ("400-digit integer in a rate", '"k_mat * EE"', '"k_mat * EE * ' + "7" * 400 + '"',
     "contains the integer 77777777777777777777... (400 characters), larger than the largest floating-point number"),
    ("400-digit integer as an initial value", "initial = 100,", "initial = " + "7" * 400 + ",",
     "[compartments.EE] initial '7777"),
    ("inf as an initial value", "initial = 100,", "initial = inf,", "[compartments.EE] initial 'inf' is infinite"),
    ("nan as an initial value", "initial = 100,", "initial = nan,", "[compartments.EE] initial 'nan' is NaN"),
    ("1e400 in an observable", '"P / V"', '"P / V * 1e400"', "[observables.plasma_conc] expr 'P / V * 1e400' is infinite (a number beyond the floating-point range"),
    # names Python would read differently
    ("fullwidth k in a rate", '"k_mat * EE"', '"\uff4b_mat * EE"',
     "[flows.maturation] rate '\uff4b_mat * EE' writes the name '\uff4b_mat' with the character '\uff4b' "
     "(U+FF4B FULLWIDTH LATIN SMALL LETTER K, read as 'k')"),
    ("fullwidth name in an observable", '"P / V"', '"P / \uff36"', "[observables.plasma_conc] expr 'P / \uff36' writes the name"),
    ("fullwidth parameter name", "k_mat  = {", '"\uff4b_mat"  = {',
     "[parameters.\uff4b_mat] '\uff4b_mat' contains the character '\uff4b' (U+FF4B FULLWIDTH LATIN SMALL LETTER K, read as 'k')"),
    # wrong TOML types
    ("a number for the name", 'name = "mini"', "name = 5", "[name] 'name' must be a string, got 5 (an integer)"),
    ("a list for the time unit", 'time_unit = "h"', 'time_unit = ["h"]', "[time_unit] 'time_unit' must be a string, got ['h'] (a list)"),
    ("a table for the description", 'description = "A small test model: endosome to MVB to plasma"', "description = { a = 1 }",
     "[description] 'description' must be a string, got {'a': 1} (a table)"),
    ("a number where the section table is", "[observables]\nplasma_conc = { expr = \"P / V\", unit = \"particles/mL\" }\n",
     "", None),  # placeholder, replaced below
    ("a list where an entry table is", K_MAT_LINE, "k_mat = [0.5, 1]",
     "[parameters.k_mat] must be an inline table such as k_mat = { ... }, got [0.5, 1] (a list)"),
    ("a string where an entry table is", EE_LINE, 'EE = "100"', "[compartments.EE] must be an inline table such as EE = { ... }, got '100' (a string)"),
    ("a string where a number is", 'k_mat  = { value = 0.5, unit = "1/h", min = 1e-3,', 'k_mat  = { value = 0.5, unit = "1/h", min = "1e-3",',
     "[parameters.k_mat] 'min' must be a number, got '1e-3' (a string)"),
    ("a boolean where a number is", "k_mat  = { value = 0.5,", "k_mat  = { value = true,",
     "[parameters.k_mat] 'value' must be a number or an expression string, got True (a boolean)"),
    ("a table where a bound is", "min = 1e-3, max = 100 }\nk_sec", "min = { low = 1 }, max = 100 }\nk_sec",
     "[parameters.k_mat] 'min' must be a number, got {'low': 1} (a table)"),
    ("a date where a number is", "k_mat  = { value = 0.5,", "k_mat  = { value = 1979-05-27,",
     "[parameters.k_mat] 'value' must be a number or an expression string, got datetime.date(1979, 5, 27) (a date or time)"),
    ("a number where a boolean is", "max = 100, fixed = true", "max = 100, fixed = 1",
     "[parameters.k_cl] 'fixed' must be true or false, got 1 (an integer)"),
    ("a list where a compartment name is", 'from = "EE", to = "MVB"', 'from = ["EE"], to = "MVB"',
     "[flows.maturation] 'from' must be a string, got ['EE'] (a list)"),
    ("a table where a compartment name is", 'from = "EE", to = "MVB"', 'from = "EE", to = { name = "MVB" }',
     "[flows.maturation] 'to' must be a string, got {'name': 'MVB'} (a table)"),
    ("a boolean where a rate is", 'rate = "k_mat * EE"', "rate = true",
     "[flows.maturation] 'rate' must be a number or an expression string, got True (a boolean)"),
    ("nested junk where an initial value is", "initial = 100,", "initial = [[[[[[[1]]]]]]],",
     "[compartments.EE] 'initial' must be a number or an expression string, got [[[[...]]]] (a list)"),
    ("a number where a unit is", 'unit = "1/h", min = 1e-3, max = 100 }\nk_sec', "unit = 2, min = 1e-3, max = 100 }\nk_sec",
     "[parameters.k_mat] 'unit' must be a string, got 2 (an integer)"),
    ("a list where an expression is", 'expr = "P / V"', "expr = [1, 2]",
     "[observables.plasma_conc] 'expr' must be a number or an expression string, got [1, 2] (a list)"),
]
HOSTILE_MODEL_FILES[[row[0] for row in HOSTILE_MODEL_FILES].index("a number where the section table is")] = (
    "a number where the section table is", "[observables]\nplasma_conc = { expr = \"P / V\", unit = \"particles/mL\" }\n",
    "", "[observables] must be a table of entries like [observables] name = { ... }, got 3 (an integer)")


@pytest.mark.parametrize("case, old, new, fragment", HOSTILE_MODEL_FILES, ids=[row[0] for row in HOSTILE_MODEL_FILES])
def test_hostile_model_files_give_one_model_error_naming_the_entry(tmp_path, case, old, new, fragment):
    text = variant(old, new)
    if case == "a number where the section table is":
        text = text.replace('time_unit = "h"', 'time_unit = "h"\nobservables = 3')
    path = write_model(tmp_path, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KineticsWarning)
        message = model_error(path)
    assert message.startswith(f"{path}: ")
    assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message) < 600


@pytest.mark.parametrize("entry, old, new", [
    ("flows.maturation", '"k_mat * EE"', '"k_mat * EE + ' + " + ".join(["EE"] * 250_000) + '"'),
    ("observables.plasma_conc", '"P / V"', '"P / V + ' + "0" * 1_000_000 + '"'),
    ("compartments.EE", '"early endosomes" }', '"early endosomes", ' + "x" * 1_000_000 + ' = 1 }'),
    ("parameters.k_mat", 'unit = "1/h", min = 1e-3, max = 100 }\nk_sec', 'unit = "1/' + "h" * 1_000_000 + ' h", min = 1e-3, max = 100 }\nk_sec'),
], ids=["1 MB rate", "1 MB observable", "1 MB unknown key", "1 MB unit"])
def test_a_megabyte_of_text_is_not_echoed_whole(tmp_path, entry, old, new):
    path = write_model(tmp_path, variant(old, new))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KineticsWarning)
        message = model_error(path)
    assert f"[{entry}]" in message
    assert "... (" in message and "characters)" in message
    assert len(message) < 1000


def test_terminal_escape_bytes_in_a_rate_are_escaped_in_the_message(tmp_path):
    path = write_model(tmp_path, variant('"k_mat * EE"', '"k_mat * EE \\u001b[2J"'))
    message = model_error(path)
    assert "\x1b" not in message and "\\x1b[2J" in message


@pytest.mark.parametrize("build, fragment", [
    (lambda m: m.add_flow("bad", "k_mat * EE", source=["EE"]), "[flows.bad] 'from' must be a compartment name (a string), got ['EE']"),
    (lambda m: m.add_flow("bad", "k_mat * EE", target={"c": "EE"}), "[flows.bad] 'to' must be a compartment name (a string)"),
    (lambda m: m.add_flow("bad", "exp(1000) * EE", source="EE"), "[flows.bad] rate 'exp(1000) * EE' contains exp(1000)"),
    (lambda m: m.add_compartment("Q", initial=10 ** 400), "[compartments.Q] initial '1000000000"),
    (lambda m: m.add_compartment("Q", initial=float("inf")), "[compartments.Q] initial 'inf' is infinite"),
    (lambda m: m.add_parameter("\uff4b", 1.0), "[parameters.\uff4b] '\uff4b' contains the character '\uff4b'"),
    (lambda m: m.add_flow("bad", "x" * 20_000, source="EE"), "is longer than 10000 characters"),
    (lambda m: m.add_parameter("k_big", [1.0] * 10_000), "[parameters.k_big] 'value' must be a number, got [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, ...]"),
], ids=["list source", "dict target", "exp(1000)", "huge integer initial", "inf initial", "fullwidth name",
        "long rate", "list value"])
def test_python_api_bad_input_gives_one_model_error(build, fragment):
    m = build_in_python()
    build(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KineticsWarning)
        with pytest.raises(ModelError) as info:
            m.validate()
    message = str(info.value)
    assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message) < 600


def test_from_dict_with_python_values_of_the_wrong_type():
    data = {"compartments": {"P": {"initial": 1.0}}, "parameters": {"k": {"value": None}},
            "flows": {"loss": {"from": "P", "rate": "k * P"}}, "name": None}
    with pytest.raises(ModelError) as info:
        Model.from_dict(data, source="api")
    message = str(info.value)
    assert "[name] 'name' must be a string, got None (a NoneType)" in message
    assert "[parameters.k] 'value' must be a number or an expression string, got None (a NoneType)" in message
