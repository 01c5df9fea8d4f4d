"""The safe expression parser: what it accepts, what it builds, and what it refuses (without
ever executing the text)."""

from __future__ import annotations

import ast
import builtins
import re

import pytest
import sympy as sp

from kinetics.errors import ExpressionError, ModelError
from kinetics.model.expressions import FUNCTIONS, MAX_LENGTH, RESERVED, TIME, parse_expression, shorten

NAMES = ["P", "EE", "Km", "Vmax", "k_mat", "k"]
S = {n: sp.Symbol(n, real=True) for n in NAMES}
P, EE, Km, Vmax, k_mat, k = (S[n] for n in NAMES)
t = TIME


def parse(text, **kwargs):
    return parse_expression(text, S, **kwargs)


def rejected(text, **kwargs) -> str:
    with pytest.raises(ExpressionError) as info:
        parse(text, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------ allowed constructs
@pytest.mark.parametrize("text, expected", [
    ("42", sp.Integer(42)),
    ("0.25", sp.Float(0.25)),
    ("1.5e3", sp.Float(1500.0)),
    ("P", P),
    ("t", TIME),
    ("pi", sp.pi),
    ("P + EE", P + EE),
    ("P - EE", P - EE),
    ("k_mat * EE", k_mat * EE),
    ("P / Km", P / Km),
    ("P ** 2", P**2),
    ("2 ** 3", sp.Integer(8)),
    ("2 ** -1", sp.Rational(1, 2)),
    ("-P", -P),
    ("+P", P),
    ("-P ** 2", -(P**2)),           # ** binds tighter than unary minus, as in Python
    ("(P + EE) * k", (P + EE) * k),
    ("Vmax * P / (Km + P)", Vmax * P / (Km + P)),
    ("exp(-k * t)", sp.exp(-k * TIME)),
    ("log(P)", sp.log(P)),
    ("ln(P)", sp.log(P)),
    ("log10(P)", sp.log(P) / sp.log(10)),
    ("sqrt(P)", sp.sqrt(P)),
    ("abs(P - EE)", sp.Abs(P - EE)),
    ("min(P, Km)", sp.Min(P, Km)),
    ("max(P, Km, 1)", sp.Max(P, Km, 1)),
    ("step(t - 2)", sp.Heaviside(TIME - 2, 1)),
    ("sin(t)", sp.sin(TIME)),
    ("cos(t)", sp.cos(TIME)),
    ("tanh(P / Km)", sp.tanh(P / Km)),
    ("piecewise(P, t < 2, 0)", sp.Piecewise((P, TIME < 2), (0, True))),
    ("piecewise(k, t <= 1, 2 * k, t >= 5, 0)", sp.Piecewise((k, TIME <= 1), (2 * k, TIME >= 5), (0, True))),
    ("piecewise(P, P > Km, EE)", sp.Piecewise((P, P > Km), (EE, True))),
    ("piecewise(P, t > 1 and t < 2, 0)", sp.Piecewise((P, sp.And(TIME > 1, TIME < 2)), (0, True))),
    ("piecewise(P, t < 1 or t > 2, 0)", sp.Piecewise((P, sp.Or(TIME < 1, TIME > 2)), (0, True))),
    ("piecewise(P, 1 < t < 2, 0)", sp.Piecewise((P, sp.And(TIME > 1, TIME < 2)), (0, True))),
    ("piecewise(P, not t > 1, 0)", sp.Piecewise((P, TIME <= 1), (0, True))),
    ("piecewise(P, t == 1, 0)", sp.Piecewise((P, sp.Eq(TIME, 1)), (0, True))),
    ("piecewise(P, t != 1, 0)", sp.Piecewise((P, sp.Ne(TIME, 1)), (0, True))),
    ("  k * P  ", k * P),
])
def test_allowed_construct_builds_the_right_sympy_expression(text, expected):
    result = parse(text)
    assert result == expected, f"{text!r} parsed to {result!r}, expected {expected!r}"


def test_names_map_to_the_given_symbols_and_t_to_the_time_symbol():
    result = parse("k * P * t")
    assert result.free_symbols == {S["k"], S["P"], TIME}
    assert TIME.name == "t" and TIME.is_real


@pytest.mark.parametrize("value, expected", [(3, sp.Integer(3)), (0.5, sp.Float(0.5))])
def test_plain_numbers_are_accepted(value, expected):
    assert parse(value) == expected


def test_sympy_expression_is_rebound_to_the_model_symbols():
    plain_P, plain_k, plain_t = sp.symbols("P k t")  # no assumptions, not the model's symbols
    result = parse(plain_k * plain_P * plain_t)
    assert result == S["k"] * S["P"] * TIME


def test_sympy_expression_with_unknown_symbol_is_rejected():
    message = rejected(sp.Symbol("q") * S["P"])
    assert "q" in message


def test_step_is_one_from_zero_on():
    expr = parse("step(t - 2)")
    assert expr.subs(TIME, 1.999) == 0
    assert expr.subs(TIME, 2) == 1
    assert expr.subs(TIME, 3) == 1


def test_piecewise_selects_branches():
    expr = parse("piecewise(10, t < 2, 20, t < 5, 30)")
    assert [expr.subs(TIME, v) for v in (1, 3, 7)] == [10, 20, 30]


def test_every_listed_function_is_reserved():
    assert set(FUNCTIONS) <= RESERVED
    assert "t" in RESERVED


def test_expression_error_is_a_model_error():
    assert issubclass(ExpressionError, ModelError)


def test_allowed_expressions_never_reach_eval_exec_or_sympify(monkeypatch):
    texts = ["Vmax * P / (Km + P)", "piecewise(P, t < 2, 0)", "step(t - 1) * k", "log10(P)",
             "max(P, Km, 1)", "sqrt(P) ** 2", "exp(-k * t)", "abs(-P)", "tanh(P) + sin(t) + cos(t)",
             "1.5e3", "min(P, 2)"]
    for text in texts:  # warm-up: sympy imports some modules lazily (with exec of code objects)
        parse(text)
    calls = []
    real_eval, real_exec, real_compile = builtins.eval, builtins.exec, builtins.compile

    def spy_eval(source, *args, **kwargs):
        if isinstance(source, str):
            calls.append(("eval", source))
        return real_eval(source, *args, **kwargs)

    def spy_exec(source, *args, **kwargs):
        if isinstance(source, str):
            calls.append(("exec", source))
        return real_exec(source, *args, **kwargs)

    def spy_compile(source, filename, mode, flags=0, *args, **kwargs):
        if isinstance(source, str) and not flags & ast.PyCF_ONLY_AST:
            calls.append(("compile", source))
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", spy_eval)
    monkeypatch.setattr(builtins, "exec", spy_exec)
    monkeypatch.setattr(builtins, "compile", spy_compile)
    for text in texts:
        parse(text)
    assert calls == [], f"text was evaluated: {calls}"
    # the spy does catch sympify on a string (it goes through eval):
    sp.sympify("P + 1")
    assert calls, "the eval spy failed to see sympify('P + 1')"


# ------------------------------------------------------------------ forbidden constructs
def test_import_call_is_rejected_and_nothing_runs(tmp_path):
    marker = tmp_path / "PWNED"
    message = rejected(f"__import__('os').system('touch {marker}')")
    assert not marker.exists(), "the expression was executed"
    assert "attribute access" in message


@pytest.mark.parametrize("text", [
    "__import__('os')",
    "eval('1 + 1')",
    "exec('x = 1')",
    "open('some_file', 'w')",
    "compile('1', 'f', 'eval')",
    "getattr(P, 'real')",
    "print(P)",
])
def test_calls_of_unknown_functions_are_rejected_naming_the_function(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = rejected(text)
    name = text.split("(")[0]
    assert f"calls '{name}'" in message
    assert "not an allowed function" in message
    assert "exp" in message and "piecewise" in message  # says what is allowed
    assert list(tmp_path.iterdir()) == []  # open(..., 'w') did not run


@pytest.mark.parametrize("text, fragment", [
    ("P.real", "attribute access"),
    ("P.__class__", "attribute access"),
    ("().__class__.__bases__[0].__subclasses__()", "attribute access"),
    ("P[0]", "indexing"),
    ("lambda: 1", "lambda"),
    ("(lambda x: x)(P)", "lambda"),
    ("'abc'", "literal 'abc'"),
    ("b'abc'", "literal b'abc'"),
    ("f'{P}'", "f-string"),
    ("[x for x in (1, 2)]", "comprehension"),
    ("sum(x for x in (1, 2))", "calls 'sum'"),
    ("P ^ 2", "'^' (use ** for powers)"),
    ("P // 2", "'//'"),
    ("P % 2", "'%'"),
    ("(y := 2)", "':='"),
    ("P if k else 1", "if-expression (use piecewise)"),
    ("[P, k]", "a list"),
    ("(P, k)", "a tuple"),
    ("{P: k}", "a dict"),
    ("True", "literal True"),
    ("None", "literal None"),
    ("1j", "literal 1j"),
    ("~P", "Invert"),
    ("P << 1", "LShift"),
    ("P @ k", "MatMult"),
])
def test_forbidden_construct_is_rejected_with_a_clear_message(text, fragment):
    message = rejected(text)
    assert fragment in message, f"{text!r}: message {message!r} does not mention {fragment!r}"


def test_keyword_arguments_are_rejected():
    message = rejected("max(P, k, key=1)")
    assert "keyword arguments" in message and "'max'" in message


def test_function_name_without_call_is_rejected():
    assert "without calling it" in rejected("exp")


@pytest.mark.parametrize("text, fragment", [
    ("min(P)", "min"),
    ("exp(P, k)", "exp"),
    ("piecewise(P, t < 1)", "piecewise"),
    ("piecewise(P, 2, 0)", "not a comparison"),
])
def test_wrong_function_arguments_are_rejected(text, fragment):
    message = rejected(text)
    assert "wrongly" in message and fragment in message


def test_huge_constant_power_is_rejected_quickly():
    message = rejected("9**9**9")
    assert "too large" in message


def test_nested_constant_powers_are_rejected():
    assert "too large" in rejected("(9**999)**100")


def test_deeply_nested_parentheses_are_rejected():
    message = rejected("(" * 1000 + "P" + ")" * 1000)
    assert "not a valid expression" in message or "nested" in message


def test_deep_nesting_is_rejected():
    assert "nested deeper than" in rejected("-" * 300 + "P")


def test_long_chain_within_length_limit_is_rejected_cleanly():
    # 6000 characters: under the length limit but too deep for Python's parser
    rejected("1+" * 3000 + "1")


def test_overly_long_text_is_rejected():
    text = "+".join(["P"] * (MAX_LENGTH // 2 + 1))
    assert len(text) > MAX_LENGTH
    assert f"longer than {MAX_LENGTH}" in rejected(text)


@pytest.mark.parametrize("text", ["t > 1", "P < Km", "1 < 2", "P > 1 and k > 1", "not P"])
def test_condition_outside_piecewise_is_rejected(text):
    assert "is a condition, not a value" in rejected(text)


@pytest.mark.parametrize("text", ["(t > 1) + 1", "k * P * (t > 1)"])
def test_condition_in_arithmetic_is_rejected(text):
    assert "condition" in rejected(text)


def test_condition_inside_a_function_is_rejected():
    assert "condition" in rejected("exp(t > 1)")


def test_unknown_name_suggests_a_close_declared_name():
    message = rejected("Vmx * P")
    assert "unknown name 'Vmx'" in message
    assert "did you mean 'Vmax'?" in message


def test_unknown_name_without_close_match_says_to_declare_it():
    message = rejected("zzz * P")
    assert "unknown name 'zzz'" in message
    assert "did you mean" not in message
    assert "declare it" in message


def test_time_can_be_forbidden():
    assert "time 't'" in rejected("k * t", allow_time=False)


@pytest.mark.parametrize("text, fragment", [("", "empty"), ("   ", "empty"), ("P +", "not a valid expression"),
                                            ("P P", "not a valid expression")])
def test_empty_or_malformed_text_is_rejected(text, fragment):
    assert fragment in rejected(text)


@pytest.mark.parametrize("value, fragment", [(True, "boolean"), ([1, 2], "list"), (None, "NoneType")])
def test_non_text_values_are_rejected(value, fragment):
    assert fragment in rejected(value)


# ------------------------------------------------------------------ numbers beyond the double range, normalised names
@pytest.mark.parametrize("text, fragment", [
    ("exp(1000)", "contains exp(1000), which is beyond the floating-point range"),
    ("k * exp(1000)", "contains exp(1000)"),
    ("P + exp(exp(1000))", "contains exp(1000)"),
    ("log(exp(exp(1000)))", "contains exp(1000)"),          # finite overall, but computed through exp(1000)
    ("1e300 * 1e300 * P", "beyond the floating-point range"),
    ("exp(710)", "contains exp(710)"),
    ("9" * 400, "contains the integer 99999999999999999999... (400 characters), larger than the largest floating-point number"),
    ("k * " + "1" * 310, "larger than the largest floating-point number"),
    ("1e400", "is infinite (a number beyond the floating-point range"),
    ("P * 1e309", "is infinite"),
    ("\uff4b * P", "writes the name '\uff4b' with the character '\uff4b' (U+FF4B FULLWIDTH LATIN SMALL LETTER K, read as 'k')"),
    ("k_m\uff41t * EE", "Python would silently read it as 'k_mat'"),
    ("k\uff11 * P", "(U+FF11 FULLWIDTH DIGIT ONE, read as '1')"),
    ("\uff45xp(P)", "writes the name '\uff45xp'"),                  # a function name, too
    ("\u212a * P", "U+212A KELVIN SIGN, read as 'K'"),
    ("(P *\n  \uff4b)", "writes the name '\uff4b'"),                # second line of a multi-line text
])
def test_values_a_double_cannot_hold_and_normalised_names_are_rejected(text, fragment):
    message = rejected(text)
    assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message) < 300


@pytest.mark.parametrize("value, fragment", [
    (float("inf"), "is infinite"),
    (float("-inf"), "is infinite"),
    (float("nan"), "is NaN"),
    (10 ** 400, "larger than the largest floating-point number"),
    (sp.exp(1000) * k, "contains exp(1000)"),
    (sp.oo * k, "beyond the floating-point range"),
])
def test_numbers_and_sympy_values_beyond_the_double_range_are_rejected(value, fragment):
    with pytest.raises(ExpressionError, match=re.escape(fragment)):
        parse(value)


@pytest.mark.parametrize("text, expected", [
    ("exp(700) * P", sp.exp(700) * P),                         # large but a double
    ("1e308 * P", sp.Float(1e308) * P),
    ("exp(-1000) * P", sp.exp(-1000) * P),                      # underflows to 0: harmless
    ("9" * 300, sp.Integer(int("9" * 300))),
])
def test_large_values_within_the_double_range_are_accepted(text, expected):
    assert parse(text) == expected


def test_non_ascii_names_written_in_normal_form_are_accepted():
    alpha = sp.Symbol("\u03b1", real=True)
    assert parse_expression("\u03b1 * P", {**S, "\u03b1": alpha}) == alpha * P


@pytest.mark.parametrize("value, expected", [
    ("short", "short"),
    ("x" * 1_000_000, "x" * 80 + "... (1000000 characters)"),
    ("a\x1b[31mred", "a\\x1b[31mred"),                          # no terminal escape reaches the terminal
    ([1, [2, [3, [4, [5]]]]], "[1, [2, [3, [...]]]]"),
    (list(range(100)), "[0, 1, 2, 3, 4, 5, ...]"),
])
def test_shorten_bounds_and_escapes_quoted_text(value, expected):
    assert shorten(value) == expected


def test_shorten_survives_a_deeply_nested_value():
    value = []
    for _ in range(100_000):
        value = [value]
    assert len(shorten(value)) < 100
