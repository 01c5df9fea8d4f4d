"""Dimensional analysis: unit strings, propagation through expressions, and the unit rules a
model file must obey (flow rate = compartment unit per time unit; observables as declared)."""

from __future__ import annotations

import pytest
import sympy as sp

from kinetics import ModelError, UnitError, compile_model, load_model
from kinetics.model.expressions import TIME, parse_expression
from kinetics.model.units import ANY, DIMENSIONLESS, UNKNOWN, format_unit, parse_unit, unit_of

from conftest import MODEL_TEXT, model_error, variant, write_model


def u(name):
    return sp.Symbol(name, positive=True)


particles, h, mL, cells = u("particles"), u("h"), u("mL"), u("cells")


# ------------------------------------------------------------------ parse_unit
@pytest.mark.parametrize("text, expected", [
    ("particles", particles),
    ("particles/h", particles / h),
    ("1/h", 1 / h),
    ("h**-1", 1 / h),
    ("mL", mL),
    ("mL**2", mL**2),
    ("particles/mL", particles / mL),
    ("particles/cells/h", particles / (cells * h)),
    ("particles*mL/h", particles * mL / h),
    (" particles / h ", particles / h),
    ("mL**0.5", sp.sqrt(mL)),
    ("1", DIMENSIONLESS),
    ("", DIMENSIONLESS),
    ("dimensionless", DIMENSIONLESS),
    ("%", DIMENSIONLESS),
    ("percent", DIMENSIONLESS),
])
def test_parse_unit(text, expected):
    assert parse_unit(text) == expected


def test_equivalent_spellings_parse_equal():
    assert parse_unit("1/h") == parse_unit("h**-1")
    assert parse_unit("particles/cells/h") == parse_unit("particles/(cells*h)")


@pytest.mark.parametrize("text", ["2/h", "particles+h", "particles/", "h^2", "sin(h)", "h**x", "m L"])
def test_bad_unit_text_is_rejected_naming_it(text):
    with pytest.raises(UnitError) as info:
        parse_unit(text)
    assert f"unit '{text}'" in str(info.value)


def test_unit_must_be_a_string():
    with pytest.raises(UnitError, match="not a string"):
        parse_unit(5)


def test_format_unit():
    assert format_unit(parse_unit("particles/h")) == "particles/h"
    assert format_unit(parse_unit("mL**2")) == "mL^2"
    assert format_unit(DIMENSIONLESS) == "1"
    assert format_unit(ANY) == "1"
    assert format_unit(UNKNOWN) == "?"


# ------------------------------------------------------------------ unit_of
NAMES = ["P", "Vmax", "Km", "k", "V", "q"]
SYM = {n: sp.Symbol(n, real=True) for n in NAMES}
UNITS = {SYM["P"]: particles, SYM["Vmax"]: particles / h, SYM["Km"]: particles, SYM["k"]: 1 / h,
         SYM["V"]: mL, TIME: h}  # q has no declared unit


def unit_of_text(text):
    return unit_of(parse_expression(text, SYM), UNITS)


@pytest.mark.parametrize("text, expected", [
    ("Vmax * P / (Km + P)", particles / h),   # Michaelis-Menten
    ("k * P", particles / h),
    ("P / V", particles / mL),
    ("P + Km", particles),
    ("P - Km", particles),
    ("-P", particles),
    ("P ** 2", particles**2),
    ("sqrt(P)", sp.sqrt(particles)),
    ("min(P, Km)", particles),
    ("abs(P)", particles),
    ("exp(-k * t)", DIMENSIONLESS),
    ("log(P / Km)", DIMENSIONLESS),
    ("k * P * step(t - 2)", particles / h),
    ("piecewise(k * P, t < 2, Vmax)", particles / h),
    ("k * t", DIMENSIONLESS),
])
def test_unit_propagation(text, expected):
    assert sp.simplify(unit_of_text(text) / expected) == 1


@pytest.mark.parametrize("text, expected", [
    ("P + 1", particles),        # a bare number fits whatever it is added to
    ("1 + P", particles),
    ("2 * P", particles),        # ... and is a dimensionless factor
    ("P / 2", particles),
    ("Km + 0.5 * P", particles),
])
def test_numbers_are_wildcards(text, expected):
    assert unit_of_text(text) == expected


def test_pure_number_has_any_unit():
    assert unit_of_text("3") is ANY
    assert unit_of_text("2 * 3 + 1") is ANY


def test_undeclared_unit_makes_the_result_unknown():
    assert unit_of_text("q * P") is UNKNOWN
    assert unit_of_text("q + P") is UNKNOWN


@pytest.mark.parametrize("text", ["P + k", "P - Vmax", "min(P, k)", "piecewise(P, t < 1, k)"])
def test_sum_of_different_units_is_an_error_naming_both(text):
    with pytest.raises(UnitError) as info:
        unit_of_text(text)
    message = str(info.value)
    assert "combines terms" in message
    assert "particles" in message


def test_sum_error_names_the_two_units():
    with pytest.raises(UnitError) as info:
        unit_of_text("P + k")
    assert "'particles'" in str(info.value) and "'1/h'" in str(info.value)


@pytest.mark.parametrize("text, function", [
    ("exp(P)", "exp"), ("log(P)", "log"), ("sin(t)", "sin"), ("tanh(Km)", "tanh"),
])
def test_function_of_a_dimensioned_quantity_is_an_error(text, function):
    with pytest.raises(UnitError) as info:
        unit_of_text(text)
    message = str(info.value)
    assert f"function {function}" in message and "dimensionless" in message


def test_comparison_of_different_units_is_an_error():
    with pytest.raises(UnitError, match="comparison"):
        unit_of_text("piecewise(P, P > k, 0)")


def test_dimensioned_exponent_is_an_error():
    with pytest.raises(UnitError, match="exponent"):
        unit_of_text("2 ** P")


# ------------------------------------------------------------------ unit rules in model files
def test_flow_rate_with_the_wrong_unit_is_rejected_naming_the_flow(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_sec * MVB"', 'rate = "k_sec * MVB * V"'))
    message = model_error(path)
    assert str(path) in message
    assert "[flows.secretion]" in message
    assert "k_sec * MVB * V" in message
    assert "'mL*particles/h'" in message and "must be 'particles/h'" in message


def test_flow_rate_missing_a_per_time_is_rejected(tmp_path):
    # s_endo declared as an amount, not an amount per hour
    path = write_model(tmp_path, variant('s_endo = { value = 10, unit = "particles/h"', 's_endo = { value = 10, unit = "particles"'))
    message = model_error(path)
    assert "[flows.endocytosis]" in message
    assert "rate 's_endo' has unit 'particles' but must be 'particles/h'" in message


def test_units_are_never_converted_between_time_units(tmp_path):
    # rate constants in 1/h are wrong for a model timed in minutes
    path = write_model(tmp_path, variant('time_unit = "h"', 'time_unit = "min"'))
    message = model_error(path)
    assert "[flows.maturation]" in message
    assert "must be 'particles/min'" in message


def test_rate_with_inconsistent_sum_is_rejected_naming_the_flow(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_cl * P"', 'rate = "k_cl * P + P"'))
    message = model_error(path)
    assert "[flows.clearance]" in message
    assert "k_cl * P + P" in message
    assert "combines terms" in message


def test_exp_of_a_dimensioned_quantity_in_a_rate_is_rejected(tmp_path):
    path = write_model(tmp_path, variant('rate = "k_cl * P"', 'rate = "k_cl * P * exp(P)"'))
    message = model_error(path)
    assert "[flows.clearance]" in message
    assert "exp needs a dimensionless argument, got 'particles'" in message


def test_michaelis_menten_rate_with_consistent_units_is_accepted(tmp_path):
    text = variant('k_cl   = { value = 1.0, unit = "1/h", min = 1e-3, max = 100, fixed = true }',
                   'Vmax = { value = 40, unit = "particles/h" }\nKm = { value = 5, unit = "particles" }')
    text = variant('rate = "k_cl * P"', 'rate = "Vmax * P / (Km + P)"', text)
    model = load_model(write_model(tmp_path, text))
    assert not compile_model(model).affine


def test_observable_with_the_wrong_declared_unit_is_rejected(tmp_path):
    path = write_model(tmp_path, variant('unit = "particles/mL"', 'unit = "particles"'))
    message = model_error(path)
    assert str(path) in message
    assert "[observables.plasma_conc]" in message
    assert "expr 'P / V' has unit 'particles/mL' but is declared 'particles'" in message


def test_observable_with_an_unparsable_unit_is_rejected(tmp_path):
    path = write_model(tmp_path, variant('unit = "particles/mL"', 'unit = "particles per mL"'))
    message = model_error(path)
    assert "[observables.plasma_conc]" in message and "particles per mL" in message


def test_flow_connecting_compartments_in_different_units_is_rejected(tmp_path):
    path = write_model(tmp_path, variant('P   = { initial = 0, unit = "particles"', 'P   = { initial = 0, unit = "particles/mL"'))
    message = model_error(path)
    assert "[flows.secretion] connects compartments in different units ('particles' and 'particles/mL')" in message


def test_bad_parameter_unit_is_rejected_naming_the_parameter(tmp_path):
    path = write_model(tmp_path, variant('unit = "mL"', 'unit = "m L"'))
    message = model_error(path)
    assert "[parameters.V]" in message and "'m L'" in message


def test_bad_time_unit_is_rejected(tmp_path):
    path = write_model(tmp_path, variant('time_unit = "h"', 'time_unit = "h h"'))
    assert "[time_unit]" in model_error(path)


def test_model_without_units_is_not_checked(tmp_path):
    text = "\n".join(line.replace(', unit = "particles/h"', "").replace(', unit = "particles"', "")
                     .replace(', unit = "1/h"', "").replace(', unit = "mL"', "").replace(', unit = "particles/mL"', "")
                     for line in MODEL_TEXT.splitlines())
    assert "unit" not in text.replace("time_unit", "")
    # an expression that would be a unit error with units is fine without them
    text = variant('rate = "k_cl * P"', 'rate = "k_cl * P * V"', text)
    model = load_model(write_model(tmp_path, text))
    assert set(model.odes()) == {"EE", "MVB", "P"}
