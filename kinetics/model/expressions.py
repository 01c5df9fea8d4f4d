"""Safe parsing of rate, observable and unit expressions.

A model file is data: its expressions are parsed with Python's ``ast`` module (which only
reads text) and every node is checked against a whitelist before a sympy expression is built
from it. Nothing is passed to ``eval``, ``exec`` or ``sympify``. Allowed: numbers, declared
names, the time ``t``, ``+ - * / **``, parentheses, comparisons and ``and/or/not`` inside
``piecewise``, and the functions listed in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
import difflib
import math
import reprlib
import sys
import unicodedata
from collections.abc import Mapping

import sympy as sp

from ..errors import ExpressionError

__all__ = ["FUNCTIONS", "RESERVED", "parse_expression", "to_text", "TIME", "shorten", "nonstandard_character",
           "describe_character"]

#: The symbol for time in every model.
TIME = sp.Symbol("t", real=True)

MAX_LENGTH = 10_000
MAX_DEPTH = 100
MAX_CONSTANT_EXPONENT = 1000
MAX_CONSTANT_DIGITS = 400
#: Longest user text quoted in an error message (longer text is cut with an ellipsis).
QUOTE_LIMIT = 80

_QUOTE_REPR = reprlib.Repr()
_QUOTE_REPR.maxlevel, _QUOTE_REPR.maxstring, _QUOTE_REPR.maxother = 3, QUOTE_LIMIT, QUOTE_LIMIT
_QUOTE_REPR.maxlist = _QUOTE_REPR.maxtuple = _QUOTE_REPR.maxdict = _QUOTE_REPR.maxset = 6


def shorten(value, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as text for an error message: strings as they are, anything else as a bounded
    repr (a deeply nested or huge value never gets printed whole), control characters escaped
    (no terminal escape sequence reaches the user's terminal), at most ``limit`` characters
    followed by an ellipsis and the full length."""
    text = value if isinstance(value, str) else _QUOTE_REPR.repr(value)
    full = len(text)
    if full > limit:
        text = text[:limit]
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text + f"... ({full} characters)" if full > limit else text


def nonstandard_character(name: str):
    """The first character of ``name`` that Python's parser would silently replace (it reads
    identifiers in Unicode normal form NFKC, so a fullwidth 'ｋ' becomes 'k'), or None."""
    if name.isascii():
        return None
    for ch in name:
        if unicodedata.normalize("NFKC", ch) != ch:
            return ch
    return None


def describe_character(ch: str) -> str:
    """'ｋ' (U+FF4B FULLWIDTH LATIN SMALL LETTER K, read as 'k')."""
    read_as = unicodedata.normalize("NFKC", ch)
    name = unicodedata.name(ch, "")
    return (f"'{shorten(ch)}' (U+{ord(ch):04X}{' ' + name if name else ''}"
            + (f", read as '{shorten(read_as)}'" if read_as != ch else "") + ")")


def _piecewise(*args):
    """piecewise(value1, cond1, value2, cond2, ..., otherwise)."""
    if len(args) < 3 or len(args) % 2 == 0:
        raise ValueError("piecewise takes (value, condition, ..., value_otherwise): an odd number >= 3 of arguments")
    pairs = [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]
    for _, cond in pairs:
        if not isinstance(cond, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
            raise ValueError(f"piecewise condition {cond} is not a comparison")
    return sp.Piecewise(*pairs, (args[-1], True))


def _factorial(x):
    """factorial of a constant, or of a whole-number step (floor or ceiling of something), whose
    derivative is 0 (SBML: of a real number, gamma(x + 1)); the factorial of a smoothly varying
    quantity has no derivative the compiled integrator could use."""
    if not x.is_number:
        if isinstance(x, (sp.floor, sp.ceiling)):
            return sp.factorial(x)
        raise ValueError(f"takes a constant number or floor(...)/ceiling(...), not '{x}'")
    if x.is_Integer and 0 <= int(x) <= 1000:
        return sp.factorial(x)
    value = float(x) + 1.0
    if value <= 0 and value == math.floor(value):
        raise ValueError(f"is undefined at {x}")
    return sp.Float(math.gamma(value)) if value < 171.6 else sp.oo


def _arity(fn, n_min, n_max=None):
    def call(*args):
        hi = n_min if n_max is None else n_max
        if not (n_min <= len(args) <= hi):
            want = f"{n_min}" if hi == n_min else f"{n_min} to {hi}" if hi != float("inf") else f"at least {n_min}"
            raise ValueError(f"takes {want} argument(s), got {len(args)}")
        return fn(*args)
    return call


#: Functions a model expression may call, by name.
FUNCTIONS = {
    "exp": _arity(sp.exp, 1),
    "log": _arity(sp.log, 1),
    "ln": _arity(sp.log, 1),
    "log10": _arity(lambda x: sp.log(x) / sp.log(10), 1),
    "sqrt": _arity(sp.sqrt, 1),
    "abs": _arity(sp.Abs, 1),
    "min": _arity(sp.Min, 2, float("inf")),
    "max": _arity(sp.Max, 2, float("inf")),
    "step": _arity(lambda x: sp.Heaviside(x, 1), 1),  # 0 before, 1 from x = 0 on
    "piecewise": _piecewise,
    "sin": _arity(sp.sin, 1),
    "cos": _arity(sp.cos, 1),
    "tanh": _arity(sp.tanh, 1),
    # the rest of the MathML an SBML model may use
    "tan": _arity(sp.tan, 1),
    "sinh": _arity(sp.sinh, 1),
    "cosh": _arity(sp.cosh, 1),
    "asin": _arity(sp.asin, 1),
    "acos": _arity(sp.acos, 1),
    "atan": _arity(sp.atan, 1),
    "asinh": _arity(sp.asinh, 1),
    "acosh": _arity(sp.acosh, 1),
    "atanh": _arity(sp.atanh, 1),
    "floor": _arity(sp.floor, 1),
    "ceiling": _arity(sp.ceiling, 1),
    "factorial": _arity(lambda x: _factorial(x), 1),
}

#: Names a model may not declare.
RESERVED = frozenset(FUNCTIONS) | {"t", "pi", "and", "or", "not", "True", "False", "None"}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a ** b,
}
_COMPARE = {
    ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq, ast.NotEq: sp.Ne,
}
_DESCRIBE = {
    ast.Attribute: "attribute access ('.')", ast.Subscript: "indexing ('[...]')",
    ast.Lambda: "lambda", ast.Call: "call", ast.List: "a list", ast.Tuple: "a tuple",
    ast.Dict: "a dict", ast.Set: "a set", ast.ListComp: "a comprehension",
    ast.GeneratorExp: "a generator", ast.IfExp: "an if-expression (use piecewise)",
    ast.BitXor: "'^' (use ** for powers)", ast.FloorDiv: "'//'", ast.Mod: "'%'",
    ast.NamedExpr: "':='", ast.Starred: "'*' unpacking", ast.JoinedStr: "an f-string",
    ast.Await: "await", ast.Yield: "yield",
}


def _describe(node) -> str:
    for kind, text in _DESCRIBE.items():
        if isinstance(node, kind):
            return text
    if isinstance(node, ast.BinOp):
        return _describe(node.op)
    return type(node).__name__


def _is_condition(expr) -> bool:
    return isinstance(expr, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)) and not isinstance(expr, sp.Expr)


class _Builder:
    def __init__(self, symbols: Mapping[str, sp.Symbol], allow_time: bool, source: str):
        self.symbols = symbols
        self.allow_time = allow_time
        # ast offsets count UTF-8 bytes; only needed when the text is not plain ASCII
        self.lines = None if source.isascii() else source.encode("utf-8").splitlines()

    def check_written(self, node):
        """Refuse a name that Python normalised: the text must mean exactly what it says."""
        if self.lines is None or node.lineno != node.end_lineno:
            return
        try:
            written = self.lines[node.lineno - 1][node.col_offset:node.end_col_offset].decode("utf-8")
        except (IndexError, UnicodeDecodeError):
            written = None
        if written != node.id:
            ch = nonstandard_character(written or node.id) or next((c for c in (written or "") if not c.isascii()), "?")
            self.fail(f"writes the name '{shorten(written or node.id)}' with the character {describe_character(ch)}; "
                      f"Python would silently read it as '{shorten(node.id)}'. Type names in plain ASCII")

    def value(self, node, depth):
        """Build a node that must be a number, not a condition."""
        result = self.build(node, depth)
        if _is_condition(result):
            self.fail("uses a condition as a number; conditions belong inside piecewise(value, condition, otherwise)")
        return result

    def fail(self, message):
        raise ExpressionError(message)

    def build(self, node, depth=0, boolean=False):
        if depth > MAX_DEPTH:
            self.fail(f"is nested deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.build(node.body, d)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(f"contains the literal {shorten(repr(value))}; only numbers are allowed")
            return _number(value, self.fail)
        if isinstance(node, ast.Name):
            self.check_written(node)
            name = node.id
            if name in self.symbols:
                return self.symbols[name]
            if name == "t":
                if not self.allow_time:
                    self.fail("uses the time 't', which is not allowed here")
                return TIME
            if name == "pi":
                return sp.pi
            if name in FUNCTIONS:
                self.fail(f"uses the function name '{name}' without calling it")
            hint = difflib.get_close_matches(name, list(self.symbols), n=1)
            self.fail(f"uses the unknown name '{shorten(name)}'" + (f" (did you mean '{hint[0]}'?)" if hint else
                      "; declare it as a compartment or parameter"))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.value(node.operand, d)
            if isinstance(node.op, ast.UAdd):
                return self.value(node.operand, d)
            if isinstance(node.op, ast.Not):
                return sp.Not(self.build(node.operand, d, boolean=True))
            self.fail(f"uses the operator {type(node.op).__name__}, which is not allowed")
        if isinstance(node, ast.BinOp):
            op = _BINARY.get(type(node.op))
            if op is None:
                self.fail(f"uses {_describe(node)}, which is not allowed")
            left, right = self.value(node.left, d), self.value(node.right, d)
            if isinstance(node.op, ast.Pow) and left.is_Number and right.is_Number:
                magnitude = abs(float(right)) * math.log10(max(abs(float(left)), 10.0))
                if abs(float(right)) > MAX_CONSTANT_EXPONENT or magnitude > MAX_CONSTANT_DIGITS:
                    self.fail(f"raises the number {shorten(str(left))} to the power {shorten(str(right))}; the result is too large")
            return op(left, right)
        if isinstance(node, ast.Compare):
            parts, left = [], self.build(node.left, d)
            for op_node, comparator in zip(node.ops, node.comparators):
                op = _COMPARE.get(type(op_node))
                if op is None:
                    self.fail(f"uses the comparison {type(op_node).__name__}, which is not allowed")
                right = self.build(comparator, d)
                parts.append(op(left, right))
                left = right
            return sp.And(*parts) if len(parts) > 1 else parts[0]
        if isinstance(node, ast.BoolOp):
            values = [self.build(v, d, boolean=True) for v in node.values]
            return sp.And(*values) if isinstance(node.op, ast.And) else sp.Or(*values)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                self.fail(f"calls {_describe(node.func)}; only the functions {', '.join(sorted(FUNCTIONS))} are allowed")
            self.check_written(node.func)
            name = node.func.id
            if name not in FUNCTIONS:
                self.fail(f"calls '{shorten(name)}', which is not an allowed function (allowed: {', '.join(sorted(FUNCTIONS))})")
            if node.keywords:
                self.fail(f"passes keyword arguments to '{name}'")
            if name == "piecewise":
                args = [self.build(a, d) for a in node.args]
            else:
                args = [self.value(a, d) for a in node.args]
            try:
                return FUNCTIONS[name](*args)
            except (ValueError, TypeError) as exc:
                self.fail(f"calls {name}(...) wrongly: {exc}")
        self.fail(f"uses {_describe(node)}, which is not allowed in an expression")


def _number(value, fail) -> sp.Expr:
    """A literal as a sympy number; ``fail`` (raises) if it is not a finite double."""
    if isinstance(value, int):
        if abs(value) > sys.float_info.max:
            fail(f"contains the integer {shorten(str(value), 20)}, larger than the largest floating-point number "
                 f"(about 1.8e308)")
        return sp.Integer(value)
    if math.isnan(value):
        fail("is NaN (not a number)")
    if math.isinf(value):
        fail("is infinite (a number beyond the floating-point range, about 1.8e308?); give a finite number")
    return sp.Float(value)


def _check_constants(expr, fail):
    """Every constant subexpression must evaluate to a finite double: the generated code
    computes them in floating point, where exp(1000) overflows."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom and not expr.is_Number:
        return
    for arg in expr.args:
        _check_constants(arg, fail)
    if not isinstance(expr, sp.Expr) or expr.free_symbols:
        return
    try:
        value = float(expr) if expr.is_Number else expr.evalf(15)
        if not isinstance(value, float):
            if not value.is_Number:
                return            # complex or unevaluated: refused elsewhere
            value = float(value)
        bad = not math.isfinite(value)
    except Exception:            # noqa: BLE001 - sympy/mpmath overflow, recursion
        bad = True
    if bad:
        fail(f"contains {shorten(to_text(expr), 40)}, which is beyond the floating-point range (about 1.8e308) "
             "and would evaluate to infinity; rescale the quantity or the units")


def parse_expression(text, symbols: Mapping[str, sp.Symbol], *, allow_time: bool = True,
                     condition: bool = False) -> sp.Expr:
    """Parse ``text`` into a sympy expression over ``symbols`` (name -> Symbol).

    Numbers (int or float) are accepted as well as strings. Raises :class:`ExpressionError`
    with a message saying what is wrong; callers prefix it with the file and entry. With
    ``condition=True`` (event triggers) the text must be a condition (comparisons joined by
    and/or/not) instead of a value.
    """
    if isinstance(text, bool):
        raise ExpressionError(f"is the boolean {text!r}; expected a number or an expression")
    if isinstance(text, (int, float)):
        return _number(text, _raise)
    if isinstance(text, sp.Basic):
        unknown = {s.name for s in text.free_symbols} - set(symbols) - ({"t"} if allow_time else set())
        if unknown:
            raise ExpressionError(f"uses the unknown name(s) {shorten(', '.join(sorted(unknown)))}")
        mapping = {s: (TIME if s.name == "t" else symbols[s.name]) for s in text.free_symbols}
        result = text.xreplace(mapping)
        try:
            _check_constants(result, _raise)
        except RecursionError:
            raise ExpressionError(f"is nested deeper than {MAX_DEPTH} levels") from None
        return result
    if not isinstance(text, str):
        raise ExpressionError(f"is a {type(text).__name__}; expected a number or an expression string")
    if not text.strip():
        raise ExpressionError("is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"is not a valid expression ({exc.msg} at column {exc.offset})") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("could not be read as an expression") from None
    try:
        result = _Builder(symbols, allow_time, text.strip()).build(tree)
    except RecursionError:
        raise ExpressionError(f"is nested deeper than {MAX_DEPTH} levels") from None
    except ExpressionError:
        raise
    except (TypeError, ValueError) as exc:  # sympy refusing an operation on what we built
        raise ExpressionError(f"could not be built ({exc})") from None
    if condition:
        if not _is_condition(result):
            raise ExpressionError("is a value, not a condition: a trigger is a comparison such as 'C > 0.4 * R' or 't >= 6' "
                                  "(several joined by and/or/not)")
        return result
    if _is_condition(result):
        raise ExpressionError("is a condition, not a value (conditions belong inside piecewise)")
    if result.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise ExpressionError("is infinite or undefined (a division by zero or a number too large for a float?)")
    if result.has(sp.I):
        raise ExpressionError("is a complex number (the square root or log of a negative constant?)")
    _check_constants(result, _raise)
    return result


def _raise(message):
    raise ExpressionError(message)


class _TextPrinter(sp.printing.str.StrPrinter):
    """Prints sympy expressions back in the model-file syntax."""

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        return f"step({self._print(expr.args[0])})"

    def _print_Exp1(self, expr):  # sympy's E, which the parser reads as a name
        return "exp(1)"

    def _print_Piecewise(self, expr):
        parts = []
        for value, cond in expr.args:
            if cond is sp.true:
                parts.append(self._print(value))
                break
            parts += [self._print(value), self._print(cond)]
        else:
            parts.append("0")
        return "piecewise(" + ", ".join(parts) + ")"

    def _print_And(self, expr):
        return "(" + " and ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " or ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(not {self._print(expr.args[0])})"


def to_text(expr) -> str:
    """An expression as model-file text that :func:`parse_expression` reads back."""
    if isinstance(expr, str):
        return expr
    return _TextPrinter().doprint(expr)
