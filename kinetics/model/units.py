"""Dimensional analysis of declared units.

A unit is a product of powers of base names (``particles/h``, ``1/h``, ``mL``,
``particles/mL``); "1", "", "dimensionless", "%" and "percent" are dimensionless. Units are
symbols, not quantities: ``min`` and ``h`` are different and never converted. Checking walks a
sympy expression and propagates units through it; bare numbers fit any unit in a sum (so
``Km + 1`` is accepted) and are dimensionless factors in a product.
"""

from __future__ import annotations

import ast

import sympy as sp

from ..errors import UnitError
from .expressions import shorten

__all__ = ["parse_unit", "unit_of", "format_unit", "DIMENSIONLESS", "ANY", "UNKNOWN"]

DIMENSIONLESS = sp.Integer(1)


class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


#: A bare number: fits whatever it is added to.
ANY = _Marker("ANY")
#: Some name in the expression has no declared unit: nothing can be checked.
UNKNOWN = _Marker("UNKNOWN")

_DIMENSIONLESS_WORDS = {"", "1", "dimensionless", "%", "percent", "fraction", "ratio"}


def parse_unit(text: str) -> sp.Expr:
    """Parse a unit string into a sympy monomial of positive base-unit symbols."""
    if not isinstance(text, str):
        raise UnitError(f"unit {shorten(text, 40)} is not a string")
    stripped = text.strip()
    if stripped.lower() in _DIMENSIONLESS_WORDS:
        return DIMENSIONLESS
    try:
        tree = ast.parse(stripped, mode="eval").body
    except SyntaxError:
        raise UnitError(f"unit '{shorten(text)}' is not a product or quotient of unit names (e.g. 'particles/h', '1/h', 'mL')") from None
    except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        raise UnitError(f"unit '{shorten(text)}' could not be read") from None

    def build(node):
        if isinstance(node, ast.Name):
            return sp.Symbol(node.id, positive=True)
        if isinstance(node, ast.Constant) and node.value == 1 and not isinstance(node.value, bool):
            return DIMENSIONLESS
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
            left, right = build(node.left), build(node.right)
            return left * right if isinstance(node.op, ast.Mult) else left / right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exponent = node.right
            sign = 1
            if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub):
                sign, exponent = -1, exponent.operand
            if isinstance(exponent, ast.Constant) and isinstance(exponent.value, (int, float)) and not isinstance(exponent.value, bool):
                return build(node.left) ** (sign * sp.nsimplify(exponent.value))
        raise UnitError(f"unit '{shorten(text)}' is not a product or quotient of unit names (e.g. 'particles/h', '1/h', 'mL**2')")

    try:
        return build(tree)
    except RecursionError:
        raise UnitError(f"unit '{shorten(text)}' is nested too deeply") from None


def format_unit(unit) -> str:
    if unit is ANY or unit == DIMENSIONLESS:
        return "1"
    if unit is UNKNOWN:
        return "?"
    return str(unit).replace("**", "^")


def _same(a, b) -> bool:
    return sp.simplify(a / b) == 1


def _combine_equal(units, what):
    known = [u for u in units if u is not ANY]
    if any(u is UNKNOWN for u in known):
        return UNKNOWN
    if not known:
        return ANY
    first = known[0]
    for other in known[1:]:
        if not _same(first, other):
            raise UnitError(f"{what} combines terms in '{format_unit(first)}' and '{format_unit(other)}'")
    return first


def _dimensionless(unit, what):
    if unit in (ANY, UNKNOWN) or _same(unit, DIMENSIONLESS):
        return
    raise UnitError(f"{what} needs a dimensionless argument, got '{format_unit(unit)}'")


def unit_of(expr, units: dict) -> object:
    """The unit of a sympy expression, given ``units`` (Symbol -> unit expression).

    Returns a unit expression, :data:`ANY` for a pure number or :data:`UNKNOWN` when a symbol in
    it has no declared unit. Raises :class:`UnitError` naming the inconsistent part.
    """
    if expr.is_Number or expr in (sp.pi, sp.E) or isinstance(expr, sp.NumberSymbol):
        return ANY
    if expr.is_Symbol:
        return units.get(expr, UNKNOWN)
    if isinstance(expr, (sp.logic.boolalg.BooleanAtom,)):
        return ANY
    args = expr.args
    if expr.is_Add or isinstance(expr, (sp.Min, sp.Max)):
        return _combine_equal([unit_of(a, units) for a in args], f"'{expr}'")
    if expr.is_Mul:
        result = DIMENSIONLESS
        for a in args:
            u = unit_of(a, units)
            if u is UNKNOWN:
                return UNKNOWN
            if u is not ANY:
                result = result * u
        return result
    if expr.is_Pow:
        base, exponent = args
        ub = unit_of(base, units)
        if exponent.is_Number:
            if ub in (ANY, UNKNOWN):
                return ub
            return ub ** exponent
        ue = unit_of(exponent, units)
        _dimensionless(ub, f"the power '{expr}'")
        _dimensionless(ue, f"the exponent of '{expr}'")
        return ub if ub is UNKNOWN or ue is UNKNOWN else ANY
    if isinstance(expr, sp.Abs):
        return unit_of(args[0], units)
    if isinstance(expr, sp.Heaviside):
        unit_of(args[0], units)
        return DIMENSIONLESS
    if isinstance(expr, sp.Piecewise):
        for value, cond in args:
            unit_of(cond, units)
        return _combine_equal([unit_of(v, units) for v, _ in args], f"'{expr}'")
    if isinstance(expr, sp.core.relational.Relational):
        _combine_equal([unit_of(a, units) for a in args], f"the comparison '{expr}'")
        return ANY
    if isinstance(expr, (sp.And, sp.Or, sp.Not)):
        for a in args:
            unit_of(a, units)
        return ANY
    if isinstance(expr, sp.Function):  # exp, log, sin, ...
        inner = [unit_of(a, units) for a in args]
        for u in inner:
            _dimensionless(u, f"the function {type(expr).__name__}")
        return UNKNOWN if any(u is UNKNOWN for u in inner) else DIMENSIONLESS
    return UNKNOWN
