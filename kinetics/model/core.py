"""Model definition: compartments, parameters, flows and observables, built from a TOML model
file or from Python, validated, and turned into symbolic ODEs.

A flow leaves its ``source`` compartment and enters its ``target`` (either may be absent), at
the rate given by its expression; dx/dt of a compartment is the sum of its inflows minus its
outflows. Everything a user can get wrong is reported as a :class:`ModelError` that names the
file, the entry and the offending text.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import keyword
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from ..errors import ExpressionError, KineticsWarning, ModelError, UnitError, suggest_name
from .expressions import RESERVED, TIME, describe_character, nonstandard_character, parse_expression, shorten, to_text
from .units import ANY, UNKNOWN, format_unit, parse_unit, unit_of

__all__ = ["Compartment", "Parameter", "Flow", "Observable", "Model", "load_model"]


@dataclass
class Compartment:
    """A pool (state variable). ``initial`` is a number or an expression of parameters."""
    name: str
    initial: float | str = 0.0
    unit: str | None = None
    description: str = ""


@dataclass
class Parameter:
    """A model constant with its default value, fitting bounds and unit."""
    name: str
    value: float
    min: float = -math.inf
    max: float = math.inf
    fixed: bool = False
    unit: str | None = None
    description: str = ""


@dataclass
class Flow:
    """Movement of material from ``source`` to ``target`` at ``rate`` (amount per time)."""
    name: str
    rate: str | float | sp.Expr
    source: str | None = None
    target: str | None = None
    description: str = ""


@dataclass
class Observable:
    """A measured quantity: an expression of compartments, parameters and ``t``."""
    name: str
    expr: str | sp.Expr
    unit: str | None = None
    description: str = ""


_ENTRY_KEYS = {
    "compartments": {"initial", "unit", "description"},
    "parameters": {"value", "min", "max", "fixed", "unit", "description"},
    "flows": {"from", "to", "rate", "description"},
    "observables": {"expr", "unit", "description"},
}
_TOP_KEYS = {"name", "description", "time_unit", *_ENTRY_KEYS}

# The TOML type each key must have: (Python types, what to call them in a message). Keys not
# listed here are checked where they are used.
_NUMBER = ((int, float), "a number")
_TEXT = ((str,), "a string")
_EXPRESSION = ((int, float, str), "a number or an expression string")
_KEY_TYPES = {
    "name": _TEXT, "description": _TEXT, "time_unit": _TEXT, "unit": _TEXT, "from": _TEXT, "to": _TEXT,
    "initial": _EXPRESSION, "rate": _EXPRESSION, "expr": _EXPRESSION,
    "value": _NUMBER, "min": _NUMBER, "max": _NUMBER, "fixed": ((bool,), "true or false"),
}


def _toml_type(value) -> str:
    """What a parsed TOML value is, in TOML's words."""
    if isinstance(value, bool):
        return "a boolean"
    for kind, word in ((int, "an integer"), (float, "a float"), (str, "a string"), (dict, "a table"), (list, "a list")):
        if isinstance(value, kind):
            return word
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date or time"
    return f"a {type(value).__name__}"


def _type_problem(key, value):
    """A message if ``value`` has the wrong type for ``key``, else None."""
    expected = _KEY_TYPES.get(key)
    if expected is None:
        return None
    types, words = expected
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return None
    return f"'{key}' must be {words}, got {_got(value)}"


def _got(value) -> str:
    """A parsed value for a message: shortened, and what TOML type it is."""
    shown = f"'{shorten(value, 40)}'" if isinstance(value, str) else shorten(value, 40)
    return f"{shown} ({_toml_type(value)})"


class _Errors:
    """Collects every problem of a model so that one error lists them all."""

    def __init__(self, origin):
        self.origin = origin
        self.items: list[str] = []

    def add(self, entry, message):
        self.items.append(f"[{entry}] {message}" if entry else message)

    def raise_if_any(self):
        if self.items:
            head = f"{self.origin}: " if self.origin else ""
            if len(self.items) == 1:
                raise ModelError(head + self.items[0])
            raise ModelError(head + f"{len(self.items)} problems:\n  - " + "\n  - ".join(self.items))


_suggest = suggest_name  # the shared "did you mean" hint (kinetics.errors)


class Model:
    """A compartment model.

    Build it from a file with :func:`load_model` / :meth:`Model.from_file`, or in Python::

        m = Model("decay", time_unit="h")
        m.add_compartment("P", initial=100, unit="particles")
        m.add_parameter("k_cl", 0.5, unit="1/h", min=1e-3, max=10)
        m.add_flow("clearance", "k_cl * P", source="P")
        m.add_observable("plasma", "P", unit="particles")

    The symbolic form (:meth:`symbolic`, :meth:`odes`, :meth:`equations`) and the compiled
    form (:func:`kinetics.compile_model`) are built on first use and rebuilt after any change; parameter
    values (``model.parameters["k"].value = 2``) are read at each simulation.
    """

    def __init__(self, name: str = "model", description: str = "", time_unit: str = "h", *, source: str | None = None):
        self.name = name
        self.description = description
        self.time_unit = time_unit
        self.source = source  # file the model came from, for messages
        self.sha256: str | None = None
        self.compartments: dict[str, Compartment] = {}
        self.parameters: dict[str, Parameter] = {}
        self.flows: dict[str, Flow] = {}
        self.observables: dict[str, Observable] = {}
        self._symbolic = None
        # memo for what later layers derive from this model (the compiled form...): cleared on any change
        self.cache: dict = {}
        self._declared_twice: list[str] = []

    # ---------------------------------------------------------------- building
    def _changed(self):
        self._symbolic = None
        self.cache = {}

    def _check_new_name(self, name, kind):
        for other_kind, table in (("compartment", self.compartments), ("parameter", self.parameters),
                                  ("flow", self.flows), ("observable", self.observables)):
            if name in table:
                self._declared_twice.append(f"'{name}' is declared as a {kind} and already as a {other_kind}")

    def add_compartment(self, name: str, initial: float | str = 0.0, unit: str | None = None, description: str = "") -> Compartment:
        self._check_new_name(name, "compartment")
        self.compartments[name] = c = Compartment(name, initial, unit, description)
        self._changed()
        return c

    def add_parameter(self, name: str, value: float, *, min: float = -math.inf, max: float = math.inf,
                      fixed: bool = False, unit: str | None = None, description: str = "") -> Parameter:
        self._check_new_name(name, "parameter")
        self.parameters[name] = p = Parameter(name, value, min, max, fixed, unit, description)
        self._changed()
        return p

    def add_flow(self, name: str, rate, source: str | None = None, target: str | None = None, description: str = "") -> Flow:
        self._check_new_name(name, "flow")
        self.flows[name] = f = Flow(name, rate, source, target, description)
        self._changed()
        return f

    def add_observable(self, name: str, expr, unit: str | None = None, description: str = "") -> Observable:
        self._check_new_name(name, "observable")
        self.observables[name] = o = Observable(name, expr, unit, description)
        self._changed()
        return o

    def copy(self) -> "Model":
        new = copy.deepcopy(self)
        new._changed()
        return new

    def with_values(self, **values: float) -> "Model":
        """A copy with new default parameter values (bounds widened if needed)."""
        new = self.copy()
        for name, value in values.items():
            if name not in new.parameters:
                raise ModelError(f"model '{self.name}': unknown parameter '{name}'{_suggest(name, new.parameters)}")
            p = new.parameters[name]
            p.value = float(value)
            p.min, p.max = min(p.min, p.value), max(p.max, p.value)
        return new

    # ------------------------------------------------------------------- files
    @classmethod
    def from_file(cls, path) -> "Model":
        from ..io.files import read_toml_file
        path = Path(path)
        data, raw = read_toml_file(path, what="model file", error=ModelError)
        model = cls.from_dict(data, source=str(path), default_name=path.stem)
        model.sha256 = hashlib.sha256(raw).hexdigest()
        return model

    @classmethod
    def from_dict(cls, data: dict, *, source: str | None = None, default_name: str = "model") -> "Model":
        """Build a model from the parsed content of a model file."""
        errors = _Errors(source)
        if not isinstance(data, dict):
            raise ModelError(f"{source}: a model must be a table of compartments, parameters, flows and observables")
        for key in data:
            if key not in _TOP_KEYS:
                errors.add(shorten(key, 40), f"unknown top-level key '{shorten(key, 40)}'{_suggest(key, _TOP_KEYS)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
        header = {"name": default_name, "description": "", "time_unit": "h"}
        for key in header:
            if key in data:
                problem = _type_problem(key, data[key])
                if problem:
                    errors.add(key, problem)
                else:
                    header[key] = data[key]
        model = cls(header["name"], header["description"], header["time_unit"], source=source)
        for section, keys in _ENTRY_KEYS.items():
            table = data.get(section, {})
            if not isinstance(table, dict):
                errors.add(section, f"must be a table of entries like [{section}] name = {{ ... }}, got {_got(table)}")
                continue
            for name, entry in table.items():
                where = f"{section}.{shorten(name, 40)}"
                if not isinstance(entry, dict):
                    if section == "parameters" and isinstance(entry, (int, float)) and not isinstance(entry, bool):
                        entry = {"value": entry}
                    else:
                        errors.add(where, f"must be an inline table such as {shorten(name, 40)} = {{ ... }}, got {_got(entry)}")
                        continue
                unknown = set(entry) - keys
                for key in sorted(unknown):
                    errors.add(where, f"unknown key '{shorten(key, 40)}'{_suggest(key, keys)}; allowed: {', '.join(sorted(keys))}")
                if unknown:
                    continue  # the rest of the model is still validated below
                wrong = [problem for key, value in entry.items() if (problem := _type_problem(key, value))]
                for problem in wrong:
                    errors.add(where, problem)
                if wrong:
                    continue
                try:
                    if section == "compartments":
                        model.add_compartment(name, entry.get("initial", 0.0), entry.get("unit"), entry.get("description", ""))
                    elif section == "parameters":
                        if "value" not in entry:
                            errors.add(where, "has no 'value'")
                            continue
                        model.add_parameter(name, entry["value"], min=entry.get("min", -math.inf), max=entry.get("max", math.inf),
                                            fixed=entry.get("fixed", False), unit=entry.get("unit"),
                                            description=entry.get("description", ""))
                    elif section == "flows":
                        if "rate" not in entry:
                            errors.add(where, "has no 'rate'")
                            continue
                        model.add_flow(name, entry["rate"], entry.get("from"), entry.get("to"), entry.get("description", ""))
                    else:
                        if "expr" not in entry:
                            errors.add(where, "has no 'expr'")
                            continue
                        model.add_observable(name, entry["expr"], entry.get("unit"), entry.get("description", ""))
                except ModelError as exc:
                    errors.add(where, str(exc))
        if errors.items:
            # report format problems together with whatever validation finds in the rest
            try:
                model.validate()
            except ModelError as exc:
                declared = set(model.compartments) | set(model.parameters) | set(model.flows) | set(model.observables)
                skipped = {name for section in _ENTRY_KEYS for name in (data.get(section) or {}) if isinstance(data.get(section), dict)} - declared
                for line in str(exc).split("\n"):
                    line = line.strip().removeprefix("- ")
                    # leave out consequences of the entries that could not be read at all
                    if line.startswith("[") and line not in errors.items and not any(f"'{n}'" in line for n in skipped):
                        errors.items.append(line)
            errors.raise_if_any()
        model.validate()
        return model

    def to_dict(self) -> dict:
        """The model as a model-file table (round-trips through :meth:`from_dict`)."""
        def clean(d):
            return {k: v for k, v in d.items() if v not in (None, "") and not (isinstance(v, float) and math.isinf(v))}
        return {
            "name": self.name, "description": self.description, "time_unit": self.time_unit,
            "compartments": {c.name: clean({"initial": c.initial if isinstance(c.initial, (int, float, str)) else to_text(c.initial), "unit": c.unit, "description": c.description}) for c in self.compartments.values()},
            "parameters": {p.name: clean({"value": p.value, "min": p.min, "max": p.max, "fixed": p.fixed or None, "unit": p.unit,
                                          "description": p.description}) for p in self.parameters.values()},
            "flows": {f.name: clean({"from": f.source, "to": f.target, "rate": to_text(f.rate), "description": f.description}) for f in self.flows.values()},
            "observables": {o.name: clean({"expr": to_text(o.expr), "unit": o.unit, "description": o.description}) for o in self.observables.values()},
        }

    # -------------------------------------------------------------- validation
    def validate(self) -> list[str]:
        """Check everything; raise :class:`ModelError` listing all problems, warn on oddities.

        Returns the warning messages (also issued as :class:`KineticsWarning`)."""
        self._build_symbolic()
        return list(self._symbolic["warnings"])

    def symbolic(self) -> dict:
        """The symbolic system every lowering consumes (states, parameters, rhs, initial values,
        observables, warnings), built on first use and rebuilt after any change."""
        return self._build_symbolic()

    def _build_symbolic(self):
        if self._symbolic is not None:
            return self._symbolic
        errors = _Errors(self.source or f"model '{self.name}'")
        for message in self._declared_twice:
            errors.add("", message)
        if not self.compartments:
            errors.add("compartments", "the model has no compartments")
        for kind, table in (("compartments", self.compartments), ("parameters", self.parameters),
                            ("flows", self.flows), ("observables", self.observables)):
            for name in table:
                if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                    errors.add(f"{kind}.{shorten(name, 40)}", f"'{shorten(name, 40)}' is not a valid name: use letters, digits and underscores, not starting with a digit")
                elif nonstandard_character(name):
                    errors.add(f"{kind}.{shorten(name, 40)}", f"'{shorten(name, 40)}' contains the character {describe_character(nonstandard_character(name))}, "
                               "so no expression could refer to it; use plain ASCII letters, digits and underscores")
                elif name in RESERVED:
                    errors.add(f"{kind}.{name}", f"'{name}' is reserved (the time 't', 'pi' and function names); choose another name")
        # symbols: parameters are real (bounds are checked separately), states nonnegative-real
        state_symbols = {n: sp.Symbol(n, real=True) for n in self.compartments}
        param_symbols = {n: sp.Symbol(n, real=True) for n in self.parameters}
        all_symbols = {**param_symbols, **state_symbols}

        for p in self.parameters.values():
            where = f"parameters.{p.name}"
            for attr in ("value", "min", "max"):
                v = getattr(p, attr)
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    errors.add(where, f"'{attr}' must be a number, got {shorten(v, 40)}")
                    break
                if isinstance(v, int) and abs(v) > 2**1023:    # would overflow a double
                    errors.add(where, f"'{attr}' is an integer of {len(str(abs(v)))} digits, beyond the range "
                                      f"of a double (about 1.8e308); give a number in range")
                    break
            else:
                if math.isnan(p.value) or math.isinf(p.value):
                    errors.add(where, f"value {p.value} is not a finite number")
                elif p.min > p.max:
                    errors.add(where, f"min ({p.min:g}) is greater than max ({p.max:g}); swap them")
                elif not (p.min <= p.value <= p.max):
                    errors.add(where, f"value {p.value:g} is outside its bounds [{p.min:g}, {p.max:g}]; widen the bounds or change the value")
            if not isinstance(p.fixed, bool):
                errors.add(where, f"'fixed' must be true or false, got {shorten(p.fixed, 40)}")

        initial = {}
        for c in self.compartments.values():
            where = f"compartments.{c.name}"
            try:
                expr = parse_expression(c.initial, param_symbols, allow_time=False)
            except ExpressionError as exc:
                errors.add(where, f"initial '{shorten(c.initial)}' {exc}")
                continue
            if expr.is_Number and float(expr) < 0:
                errors.add(where, f"initial amount {shorten(c.initial)} is negative; amounts start at 0 or more")
            initial[c.name] = expr

        rates, used = {}, set()
        for f in self.flows.values():
            where = f"flows.{f.name}"
            if f.source is None and f.target is None:
                errors.add(where, "has neither 'from' nor 'to'; a flow must leave or enter a compartment")
            for end, label in ((f.source, "from"), (f.target, "to")):
                if end is not None and not isinstance(end, str):
                    errors.add(where, f"'{label}' must be a compartment name (a string), got {shorten(end, 40)}")
                elif end is not None and end not in self.compartments:
                    errors.add(where, f"'{label}' names the unknown compartment '{shorten(end, 40)}'{_suggest(end, self.compartments)}")
            if f.source is not None and f.source == f.target:
                errors.add(where, f"goes from '{f.source}' to itself")
            try:
                rates[f.name] = parse_expression(f.rate, all_symbols)
            except ExpressionError as exc:
                errors.add(where, f"rate '{shorten(f.rate)}' {exc}")
                continue
            used |= rates[f.name].free_symbols

        observables = {}
        for o in self.observables.values():
            try:
                observables[o.name] = parse_expression(o.expr, all_symbols)
            except ExpressionError as exc:
                errors.add(f"observables.{o.name}", f"expr '{shorten(o.expr)}' {exc}")
                continue
            used |= observables[o.name].free_symbols
        for expr in initial.values():
            used |= expr.free_symbols
        errors.raise_if_any()

        self._check_units(errors, state_symbols, param_symbols, rates, observables)
        errors.raise_if_any()

        warned = []
        for name in self.parameters:
            if param_symbols[name] not in used:
                warned.append(f"{self.source or self.name}: [parameters.{name}] is not used by any flow, observable or initial value")
        for message in warned:
            warnings.warn(message, KineticsWarning, stacklevel=3)

        states = [state_symbols[n] for n in self.compartments]
        rhs = {s: sp.Integer(0) for s in states}
        for f in self.flows.values():
            if f.source is not None:
                rhs[state_symbols[f.source]] -= rates[f.name]
            if f.target is not None:
                rhs[state_symbols[f.target]] += rates[f.name]
        self._symbolic = {
            "states": states,
            "parameters": [param_symbols[n] for n in self.parameters],
            "rhs": [rhs[s] for s in states],
            "rates": rates,
            "observables": observables,
            "initial": [initial[n] for n in self.compartments],
            "symbols": all_symbols,
            "warnings": warned,
        }
        return self._symbolic

    def _check_units(self, errors, state_symbols, param_symbols, rates, observables):
        units = {}
        for kind, table, symbols in (("compartments", self.compartments, state_symbols), ("parameters", self.parameters, param_symbols)):
            for name, entry in table.items():
                if entry.unit is not None:
                    try:
                        units[symbols[name]] = parse_unit(entry.unit)
                    except UnitError as exc:
                        errors.add(f"{kind}.{name}", str(exc))
        try:
            time_unit = parse_unit(self.time_unit)
        except UnitError as exc:
            errors.add("time_unit", str(exc))
            return
        units[TIME] = time_unit
        for f in self.flows.values():
            if f.name not in rates:
                continue
            where = f"flows.{f.name}"
            ends = [e for e in (f.source, f.target) if e is not None and e in self.compartments]
            expected = None
            for end in ends:
                c_unit = units.get(state_symbols[end])
                if c_unit is None:
                    continue
                if expected is not None and sp.simplify(expected / (c_unit / time_unit)) != 1:
                    errors.add(where, f"connects compartments in different units ('{self.compartments[f.source].unit}' and '{self.compartments[f.target].unit}'); a flow moves one quantity, so both ends need the same unit")
                expected = c_unit / time_unit
            try:
                actual = unit_of(rates[f.name], units)
            except UnitError as exc:
                errors.add(where, f"rate '{shorten(f.rate)}': {exc}")
                continue
            if expected is None or actual in (ANY, UNKNOWN):
                continue
            if sp.simplify(actual / expected) != 1:
                errors.add(where, f"rate '{shorten(f.rate)}' has unit '{format_unit(actual)}' but must be '{format_unit(expected)}' (the compartment's unit per {self.time_unit})")
        for o in self.observables.values():
            if o.name not in observables:
                continue
            try:
                actual = unit_of(observables[o.name], units)
            except UnitError as exc:
                errors.add(f"observables.{o.name}", f"expr '{shorten(o.expr)}': {exc}")
                continue
            if o.unit is None or actual in (ANY, UNKNOWN):
                continue
            try:
                declared = parse_unit(o.unit)
            except UnitError as exc:
                errors.add(f"observables.{o.name}", str(exc))
                continue
            if sp.simplify(actual / declared) != 1:
                errors.add(f"observables.{o.name}", f"expr '{shorten(o.expr)}' has unit '{format_unit(actual)}' but is declared '{o.unit}'")

    # ---------------------------------------------------------------- symbolic
    @property
    def state_names(self) -> list[str]:
        return list(self.compartments)

    @property
    def parameter_names(self) -> list[str]:
        return list(self.parameters)

    @property
    def observable_names(self) -> list[str]:
        return list(self.observables)

    def odes(self) -> dict[str, sp.Expr]:
        """dx/dt for each compartment, as sympy expressions keyed by compartment name."""
        sym = self._build_symbolic()
        return {s.name: e for s, e in zip(sym["states"], sym["rhs"])}

    def equations(self, format: str = "text") -> str:
        """The ODEs as plain text (``format="text"``) or LaTeX (``format="latex"``)."""
        odes = self.odes()
        if format == "text":
            width = max(len(n) for n in odes)
            return "\n".join(f"d{n}/dt{' ' * (width - len(n))} = {sp.sstr(e)}" for n, e in odes.items())
        if format == "latex":
            lines = [rf"\frac{{d\,{sp.latex(sp.Symbol(n))}}}{{dt}} &= {sp.latex(e)}" for n, e in odes.items()]
            return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"
        raise ValueError(f"format must be 'text' or 'latex', not {format!r}")

    def parameter_values(self) -> dict[str, float]:
        return {n: float(p.value) for n, p in self.parameters.items()}

    def make_params(self, **overrides):
        """An :class:`lmfit.Parameters` with this model's values, bounds and fixed flags."""
        import lmfit

        params = lmfit.Parameters()
        for p in self.parameters.values():
            params.add(p.name, value=float(overrides.get(p.name, p.value)), min=p.min, max=p.max, vary=not p.fixed)
        return params

    def __repr__(self):
        return (f"<Model '{self.name}': {len(self.compartments)} compartments, {len(self.parameters)} parameters, "
                f"{len(self.flows)} flows, {len(self.observables)} observables>")


def load_model(path) -> Model:
    """Read and validate a TOML model file (see DESIGN.md for the format)."""
    return Model.from_file(path)
