"""Model definition: compartments, parameters, flows and observables, built from a TOML model
file or from Python, validated, and turned into symbolic ODEs.

A flow leaves its ``source`` compartment and enters its ``target`` (either may be absent), at
the rate given by its expression; dx/dt of a compartment is the sum of its inflows minus its
outflows. The general form (DESIGN.md "The general form") adds reactions with stoichiometry,
pool volumes and boundary pools, parameter values and initial values as expressions,
assignments, rate rules and triggered events; :meth:`Model.symbolic` lowers all of it to a
:class:`~kinetics.symbolic.SymbolicSystem`. Everything a user can get wrong is reported as a
:class:`ModelError` that names the file, the entry and the offending text.
"""

from __future__ import annotations

import copy
import hashlib
import keyword
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from ..errors import ExpressionError, KineticsWarning, ModelError, UnitError, suggest_name
from .expressions import RESERVED, TIME, describe_character, nonstandard_character, parse_expression, shorten, to_text
from .symbolic import SymbolicEvent, SymbolicReaction, SymbolicSystem
from .units import ANY, UNKNOWN, format_unit, parse_unit, unit_of
from ..io.model_toml import ENTRY_KEYS as _ENTRY_KEYS, GENERAL_KEYS as _GENERAL_KEYS, TOP_KEYS as _TOP_KEYS
from ..io.model_toml import describe_value as _got, read_model_toml, type_problem as _type_problem

__all__ = ["Compartment", "Parameter", "Flow", "Reaction", "Assignment", "RateRule", "TriggeredEvent", "Observable",
           "Model", "load_model"]


@dataclass
class Compartment:
    """A pool (state variable). ``initial`` is a number or an expression of parameters."""
    name: str
    initial: float | str = 0.0
    unit: str | None = None
    description: str = ""
    #: a number or a parameter name (metadata for concentrations; the state is an amount)
    volume: float | str | None = None
    #: a boundary pool is not changed by reactions (events and doses may change it)
    boundary: bool = False


@dataclass
class Parameter:
    """A model constant with its default value, fitting bounds and unit. ``value`` may be an
    expression of other parameters (evaluated at the start of every simulation)."""
    name: str
    value: float | str
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
class Reaction:
    """Reactants turned into products at ``rate`` (amount per time); stoichiometries are
    positive numbers (name -> stoichiometry)."""
    name: str
    rate: str | float | sp.Expr
    reactants: dict = None
    products: dict = None
    description: str = ""


@dataclass
class Assignment:
    """A named derived quantity: an expression of pools, parameters, t and other assignments."""
    name: str
    expr: str | float | sp.Expr
    unit: str | None = None
    description: str = ""


@dataclass
class RateRule:
    """d(parameter)/dt for a parameter that moves in time."""
    name: str
    expr: str | float | sp.Expr
    description: str = ""


@dataclass
class TriggeredEvent:
    """Assignments fired when ``trigger`` turns from false to true (see DESIGN.md)."""
    name: str
    trigger: str | sp.Basic
    assign: dict
    fire_at_start: bool = False
    persistent: bool = True
    description: str = ""


@dataclass
class Observable:
    """A measured quantity: an expression of compartments, parameters and ``t``."""
    name: str
    expr: str | sp.Expr
    unit: str | None = None
    description: str = ""


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


def _number(value) -> sp.Expr:
    """A stoichiometry or volume as a sympy number (integral values exact)."""
    value = float(value)
    return sp.Integer(int(value)) if value.is_integer() else sp.Float(value)


def _dependency_order(deps: dict, section: str, errors) -> list:
    """Names of ``deps`` (name -> names it uses) ordered so that each comes after what it
    uses (declaration order otherwise); a cycle is reported naming its entries."""
    order, state = [], {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = path[path.index(name):] + [name]
            errors.add(f"{section}.{name}", f"{' -> '.join(cycle)} is a cycle: each of {', '.join(sorted(set(cycle)))} "
                       "is computed from the others; break the cycle by giving one of them a value")
            return
        state[name] = "open"
        for other in sorted(deps[name] & deps.keys(), key=list(deps).index):
            visit(other, path + [name])
        state[name] = "done"
        order.append(name)

    for name in deps:
        visit(name, [])
    return order


def _stoichiometry(value, where, label, errors, pools) -> dict:
    """A reaction side (None, a name, a list of names or a table name -> stoichiometry) as a
    dict name -> positive number."""
    out = {}
    if value is None:
        return out
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, str):
                errors.add(where, f"'{label}' lists {item!r}; list pool names, or write a table {{ A = 1, B = 2 }} for stoichiometries")
                continue
            out[item] = out.get(item, 0) + 1
    elif isinstance(value, dict):
        for name, s in value.items():
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                errors.add(where, f"'{label}' gives '{name}' the stoichiometry {s!r}; a stoichiometry is a positive number")
                continue
            out[name] = s
    else:
        errors.add(where, f"'{label}' must be a pool name, a list of names or a table name -> stoichiometry, got {value!r}")
        return {}
    for name in list(out):
        if name not in pools:
            errors.add(where, f"'{label}' names the unknown compartment '{name}'{_suggest(str(name), pools)}")
            del out[name]
    return out


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
        self.reactions: dict[str, Reaction] = {}
        self.assignments: dict[str, Assignment] = {}
        self.rate_rules: dict[str, RateRule] = {}
        self.events: dict[str, TriggeredEvent] = {}
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
                                  ("flow", self.flows), ("observable", self.observables), ("reaction", self.reactions),
                                  ("assignment", self.assignments), ("event", self.events)):
            if name in table:
                self._declared_twice.append(f"'{name}' is declared as a {kind} and already as a {other_kind}")

    def add_compartment(self, name: str, initial: float | str = 0.0, unit: str | None = None, description: str = "",
                        *, volume: float | str | None = None, boundary: bool = False) -> Compartment:
        self._check_new_name(name, "compartment")
        self.compartments[name] = c = Compartment(name, initial, unit, description, volume, boundary)
        self._changed()
        return c

    def add_parameter(self, name: str, value: float | str, *, min: float = -math.inf, max: float = math.inf,
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

    def add_reaction(self, name: str, rate, reactants=None, products=None, description: str = "") -> Reaction:
        """A reaction: ``reactants`` and ``products`` are a pool name, a list of names
        (stoichiometry 1 each) or a dict name -> positive stoichiometry."""
        self._check_new_name(name, "reaction")
        self.reactions[name] = r = Reaction(name, rate, reactants, products, description)
        self._changed()
        return r

    def add_assignment(self, name: str, expr, unit: str | None = None, description: str = "") -> Assignment:
        """A named quantity (expression of pools, parameters, t, other assignments)."""
        self._check_new_name(name, "assignment")
        self.assignments[name] = a = Assignment(name, expr, unit, description)
        self._changed()
        return a

    def add_rate_rule(self, parameter: str, expr, description: str = "") -> RateRule:
        """d(parameter)/dt = expr: the parameter moves in time (it becomes a state)."""
        if parameter in self.rate_rules:
            self._declared_twice.append(f"parameter '{parameter}' has two rate rules")
        self.rate_rules[parameter] = r = RateRule(parameter, expr, description)
        self._changed()
        return r

    def add_event(self, name: str, trigger, assign: dict, *, fire_at_start: bool = False, persistent: bool = True,
                  description: str = "") -> TriggeredEvent:
        """When ``trigger`` turns true, set each target (pool or parameter) of ``assign`` to its
        expression evaluated just before."""
        self._check_new_name(name, "event")
        self.events[name] = e = TriggeredEvent(name, trigger, dict(assign or {}), fire_at_start, persistent, description)
        self._changed()
        return e

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
        """Read and validate a TOML model file (the format: :mod:`kinetics.io.model_toml`)."""
        file = read_model_toml(path)
        model = cls.from_dict(file.data, source=file.source, default_name=file.default_name)
        model.sha256 = file.sha256
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
                        model.add_compartment(name, entry.get("initial", 0.0), entry.get("unit"), entry.get("description", ""),
                                              volume=entry.get("volume"), boundary=entry.get("boundary", False))
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
        model._read_general_sections(data, errors)
        if errors.items:
            # report format problems together with whatever validation finds in the rest
            try:
                model.validate()
            except ModelError as exc:
                declared = set(model.compartments) | set(model.parameters) | set(model.flows) | set(model.observables)
                skipped = {name for section in (*_ENTRY_KEYS, *_GENERAL_KEYS) for name in (data.get(section) or {}) if isinstance(data.get(section), dict)} - declared
                for line in str(exc).split("\n"):
                    line = line.strip().removeprefix("- ")
                    # leave out consequences of the entries that could not be read at all
                    if line.startswith("[") and line not in errors.items and not any(f"'{n}'" in line for n in skipped):
                        errors.items.append(line)
            errors.raise_if_any()
        model.validate()
        return model

    def _read_general_sections(self, data, errors):
        """[reactions], [assignments], [rates] and [events] of a model file."""
        for section, keys in _GENERAL_KEYS.items():
            table = data.get(section, {})
            if not isinstance(table, dict):
                errors.add(section, f"must be a table of entries like [{section}] name = ...")
                continue
            for name, entry in table.items():
                where = f"{section}.{name}"
                if section in ("assignments", "rates") and not isinstance(entry, dict):
                    entry = {"expr": entry}
                if not isinstance(entry, dict):
                    errors.add(where, f"must be an inline table such as {name} = {{ ... }}, got {entry!r}")
                    continue
                unknown = set(entry) - keys
                for key in sorted(unknown):
                    errors.add(where, f"unknown key '{key}'{_suggest(key, keys)}; allowed: {', '.join(sorted(keys))}")
                if unknown:
                    continue
                required = {"reactions": "rate", "assignments": "expr", "rates": "expr", "events": "trigger"}[section]
                if required not in entry:
                    errors.add(where, f"has no '{required}'")
                    continue
                description = entry.get("description", "")
                if section == "reactions":
                    self.add_reaction(name, entry["rate"], entry.get("reactants"), entry.get("products"), description)
                elif section == "assignments":
                    self.add_assignment(name, entry["expr"], entry.get("unit"), description)
                elif section == "rates":
                    self.add_rate_rule(name, entry["expr"], description)
                else:
                    assign = entry.get("assign", {})
                    if not isinstance(assign, dict) or not assign:
                        errors.add(where, "needs 'assign', a table of target = \"expression\" (targets: pools or parameters)")
                        continue
                    self.add_event(name, entry["trigger"], assign, fire_at_start=entry.get("fire_at_start", False),
                                   persistent=entry.get("persistent", True), description=description)

    def to_sbml(self, path=None) -> str:
        """This model as SBML Level 3 version 2 text (written atomically to ``path`` if given);
        see :func:`kinetics.io.sbml.write_sbml`."""
        from ..io.sbml import write_sbml
        return write_sbml(self, path)

    def to_dict(self) -> dict:
        """The model as a model-file table (round-trips through :meth:`from_dict`)."""
        def clean(d):
            return {k: v for k, v in d.items() if v not in (None, "") and not (isinstance(v, float) and math.isinf(v))}
        general = {}
        if self.reactions:
            def side(v):
                return dict(v) if isinstance(v, dict) else v
            general["reactions"] = {r.name: clean({"reactants": side(r.reactants), "products": side(r.products),
                                                   "rate": to_text(r.rate), "description": r.description})
                                    for r in self.reactions.values()}
        if self.assignments:
            general["assignments"] = {a.name: (to_text(a.expr) if not (a.unit or a.description) else
                                               clean({"expr": to_text(a.expr), "unit": a.unit, "description": a.description}))
                                      for a in self.assignments.values()}
        if self.rate_rules:
            general["rates"] = {r.name: (to_text(r.expr) if not r.description else
                                         {"expr": to_text(r.expr), "description": r.description})
                                for r in self.rate_rules.values()}
        if self.events:
            general["events"] = {e.name: clean({"trigger": to_text(e.trigger), "assign": {k: to_text(v) for k, v in e.assign.items()},
                                                "fire_at_start": e.fire_at_start or None,
                                                "persistent": None if e.persistent else False, "description": e.description})
                                 for e in self.events.values()}
        return {
            "name": self.name, "description": self.description, "time_unit": self.time_unit,
            "compartments": {c.name: clean({"initial": c.initial if isinstance(c.initial, (int, float, str)) else to_text(c.initial), "unit": c.unit, "description": c.description,
                                            "volume": c.volume, "boundary": c.boundary or None}) for c in self.compartments.values()},
            "parameters": {p.name: clean({"value": p.value if isinstance(p.value, (int, float, str)) else to_text(p.value), "min": p.min, "max": p.max, "fixed": p.fixed or None, "unit": p.unit,
                                          "description": p.description}) for p in self.parameters.values()},
            "flows": {f.name: clean({"from": f.source, "to": f.target, "rate": to_text(f.rate), "description": f.description}) for f in self.flows.values()},
            "observables": {o.name: clean({"expr": to_text(o.expr), "unit": o.unit, "description": o.description}) for o in self.observables.values()},
            **general,
        }

    # -------------------------------------------------------------- validation
    def validate(self) -> list[str]:
        """Check everything; raise :class:`ModelError` listing all problems, warn on oddities.

        Returns the warning messages (also issued as :class:`KineticsWarning`)."""
        self._build_symbolic()
        return list(self._symbolic["warnings"])

    def symbolic(self) -> SymbolicSystem:
        """The model lowered to sympy (:class:`~kinetics.symbolic.SymbolicSystem`): states,
        parameters, right-hand sides, initial values, reactions, assignments (substituted),
        events and observables. Built on first use, rebuilt after any change; raises
        :class:`ModelError` listing every problem."""
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
                            ("flows", self.flows), ("observables", self.observables), ("reactions", self.reactions),
                            ("assignments", self.assignments), ("events", self.events)):
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
        assign_symbols = {n: sp.Symbol(n, real=True) for n in self.assignments}
        full_symbols = {**all_symbols, **assign_symbols}

        for name in self.rate_rules:
            if name not in self.parameters:
                kind = "a compartment (pools change through reactions and flows)" if name in self.compartments else "not a parameter"
                errors.add(f"rates.{name}", f"'{name}' is {kind}; a rate rule gives d(parameter)/dt of a declared parameter"
                           f"{_suggest(str(name), self.parameters) if name not in self.compartments else ''}")

        values = {}  # parameter -> sympy value (number or expression of parameters)
        for p in self.parameters.values():
            where = f"parameters.{p.name}"
            if isinstance(p.value, (str, sp.Basic)):
                # an initial assignment: an expression of other parameters, evaluated at the start
                for attr in ("min", "max"):
                    v = getattr(p, attr)
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        errors.add(where, f"'{attr}' must be a number, got {shorten(v, 40)}")
                try:
                    values[p.name] = parse_expression(p.value, param_symbols, allow_time=False)
                except ExpressionError as exc:
                    errors.add(where, f"value '{shorten(p.value)}' {exc}")
            else:
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
                    values[p.name] = sp.Float(p.value) if isinstance(p.value, float) else sp.Integer(p.value)
            if not isinstance(p.fixed, bool):
                errors.add(where, f"'fixed' must be true or false, got {shorten(p.fixed, 40)}")
        # parameter values in terms of the base parameters (numbers, no rate rule)
        computed = [n for n, p in self.parameters.items() if isinstance(p.value, (str, sp.Basic)) and n in values]
        order = _dependency_order({n: {s.name for s in values[n].free_symbols} for n in computed}, "parameters", errors)
        resolved = {n: (values[n] if n in self.rate_rules else param_symbols[n]) for n in values if n not in computed}
        for n in order:
            resolved[n] = values[n].xreplace({param_symbols[d]: resolved[d] for d in
                                              (s.name for s in values[n].free_symbols) if d in resolved})

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
            # parameters with a rate rule are states: their start value stands in for them
            initial[c.name] = expr.xreplace({param_symbols[n]: resolved[n] for n in self.rate_rules if n in resolved})
            if not isinstance(c.boundary, bool):
                errors.add(where, f"'boundary' must be true or false, got {c.boundary!r}")
            if c.volume is not None:
                if isinstance(c.volume, str) and c.volume in self.parameters:
                    pass
                elif isinstance(c.volume, bool) or not isinstance(c.volume, (int, float)) or not (c.volume > 0 and math.isfinite(c.volume)):
                    errors.add(where, f"volume {c.volume!r} must be a positive number or a parameter name{_suggest(str(c.volume), self.parameters)}")

        raw_assignments = {}
        for a in self.assignments.values():
            try:
                raw_assignments[a.name] = parse_expression(a.expr, full_symbols)
            except ExpressionError as exc:
                errors.add(f"assignments.{a.name}", f"'{a.expr}' {exc}")
        assignment_order = _dependency_order({n: {s.name for s in e.free_symbols} & set(raw_assignments)
                                              for n, e in raw_assignments.items()}, "assignments", errors)

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
                rates[f.name] = parse_expression(f.rate, full_symbols)
            except ExpressionError as exc:
                errors.add(where, f"rate '{shorten(f.rate)}' {exc}")
                continue
        stoichiometry = {}  # reaction -> (reactants, products)
        for r in self.reactions.values():
            where = f"reactions.{r.name}"
            sides = [_stoichiometry(getattr(r, label), where, label, errors, self.compartments) for label in ("reactants", "products")]
            if not sides[0] and not sides[1] and r.reactants is None and r.products is None:
                errors.add(where, "has neither 'reactants' nor 'products'; a reaction must consume or produce a pool")
            stoichiometry[r.name] = tuple(sides)
            try:
                rates[r.name] = parse_expression(r.rate, full_symbols)
            except ExpressionError as exc:
                errors.add(where, f"rate '{r.rate}' {exc}")

        rate_rules = {}
        for r in self.rate_rules.values():
            try:
                rate_rules[r.name] = parse_expression(r.expr, full_symbols)
            except ExpressionError as exc:
                errors.add(f"rates.{r.name}", f"'{r.expr}' {exc}")

        observables = {}
        for o in self.observables.values():
            try:
                observables[o.name] = parse_expression(o.expr, full_symbols)
            except ExpressionError as exc:
                errors.add(f"observables.{o.name}", f"expr '{shorten(o.expr)}' {exc}")
                continue

        triggers, event_assigns = {}, {}
        for e in self.events.values():
            where = f"events.{e.name}"
            try:
                triggers[e.name] = parse_expression(e.trigger, full_symbols, condition=True)
            except ExpressionError as exc:
                errors.add(where, f"trigger '{e.trigger}' {exc}")
            for flag in ("fire_at_start", "persistent"):
                if not isinstance(getattr(e, flag), bool):
                    errors.add(where, f"'{flag}' must be true or false, got {getattr(e, flag)!r}")
            if not e.assign:
                errors.add(where, "assigns nothing; give assign = { TARGET = \"expression\" }")
            event_assigns[e.name] = {}
            for target, expr in e.assign.items():
                if target not in self.compartments and target not in self.parameters:
                    what = " (an assignment is computed, not set: assign what it is computed from)" if target in self.assignments else \
                        _suggest(str(target), [*self.compartments, *self.parameters])
                    errors.add(where, f"assigns the unknown target '{target}'{what}; targets are compartments and parameters")
                    continue
                try:
                    event_assigns[e.name][target] = parse_expression(expr, full_symbols)
                except ExpressionError as exc:
                    errors.add(where, f"assign {target} = '{expr}' {exc}")
        errors.raise_if_any()

        self._check_units(errors, state_symbols, param_symbols, rates, observables,
                          assign_symbols=assign_symbols, assignments=raw_assignments, assignment_order=assignment_order,
                          stoichiometry=stoichiometry, rate_rules=rate_rules, triggers=triggers, event_assigns=event_assigns)
        errors.raise_if_any()

        # assignments substituted (in dependency order) everywhere they are used
        substitute = {}
        for name in assignment_order:
            substitute[assign_symbols[name]] = raw_assignments[name].xreplace(substitute)
        assigned = {name: substitute[assign_symbols[name]] for name in assignment_order}
        rates = {k: v.xreplace(substitute) for k, v in rates.items()}
        observables = {k: v.xreplace(substitute) for k, v in observables.items()}
        rate_rules = {k: v.xreplace(substitute) for k, v in rate_rules.items()}
        events = [SymbolicEvent(e.name, triggers[e.name].xreplace(substitute),
                                {k: v.xreplace(substitute) for k, v in event_assigns[e.name].items()},
                                e.fire_at_start, e.persistent) for e in self.events.values()]

        for expr in [*rates.values(), *observables.values(), *initial.values(), *rate_rules.values(),
                     *(e.trigger for e in events), *(v for e in events for v in e.assign.values()),
                     *(resolved[n] for n in order)]:
            used |= expr.free_symbols
        used |= {param_symbols[c.volume] for c in self.compartments.values() if isinstance(c.volume, str)}
        warned = []
        for name in self.parameters:
            if param_symbols[name] not in used and name not in self.rate_rules:
                warned.append(f"{self.source or self.name}: [parameters.{name}] is not used by any flow, observable or initial value")
        for message in warned:
            warnings.warn(message, KineticsWarning, stacklevel=3)

        pools = [state_symbols[n] for n in self.compartments]
        moving = [param_symbols[n] for n in self.parameters if n in self.rate_rules]  # declaration order
        rhs = {s: sp.Integer(0) for s in pools}
        reactions = {}
        for f in self.flows.values():
            reactions[f.name] = SymbolicReaction(f.name, rates[f.name], {f.source: 1} if f.source is not None else {},
                                                 {f.target: 1} if f.target is not None else {})
        for r in self.reactions.values():
            reactions[r.name] = SymbolicReaction(r.name, rates[r.name], *stoichiometry[r.name])
        for reaction in reactions.values():
            for pool, change in reaction.net.items():
                if change == 0 or self.compartments[pool].boundary:
                    continue  # boundary pools are held (SBML boundaryCondition)
                term = reaction.rate if change == 1 else (-reaction.rate if change == -1 else _number(change) * reaction.rate)
                rhs[state_symbols[pool]] += term
        volumes = {c.name: (param_symbols[c.volume] if isinstance(c.volume, str) else _number(c.volume))
                   for c in self.compartments.values() if c.volume is not None}
        self._symbolic = SymbolicSystem(
            states=pools + moving,
            parameters=[param_symbols[n] for n in self.parameters if n not in self.rate_rules],
            rhs=[rhs[s] for s in pools] + [rate_rules[s.name] for s in moving],
            initial=[initial[n] for n in self.compartments] + [resolved[s.name] for s in moving],
            observables=observables,
            reactions=reactions,
            assignments=assigned,
            parameter_expressions={n: resolved[n] for n in order if n not in self.rate_rules},
            events=events,
            n_pools=len(pools),
            boundary=frozenset(n for n, c in self.compartments.items() if c.boundary),
            volumes=volumes,
            symbols={**all_symbols},
            warnings=warned,
        )
        return self._symbolic

    def _check_units(self, errors, state_symbols, param_symbols, rates, observables, *, assign_symbols=None,
                     assignments=None, assignment_order=(), stoichiometry=None, rate_rules=None, triggers=None,
                     event_assigns=None):
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
        # assignments: their declared unit, else the unit of their expression (in dependency order)
        for name in assignment_order:
            a = self.assignments[name]
            try:
                actual = unit_of(assignments[name], units)
            except UnitError as exc:
                errors.add(f"assignments.{name}", f"'{a.expr}': {exc}")
                continue
            declared = None
            if a.unit is not None:
                try:
                    declared = parse_unit(a.unit)
                except UnitError as exc:
                    errors.add(f"assignments.{name}", str(exc))
                    continue
                if actual not in (ANY, UNKNOWN) and sp.simplify(actual / declared) != 1:
                    errors.add(f"assignments.{name}", f"'{a.expr}' has unit '{format_unit(actual)}' but is declared '{a.unit}'")
                    continue
            unit = declared if declared is not None else actual
            if unit is not ANY and unit is not UNKNOWN:
                units[assign_symbols[name]] = unit
        for name, expr in (rate_rules or {}).items():
            where = f"rates.{name}"
            try:
                actual = unit_of(expr, units)
            except UnitError as exc:
                errors.add(where, f"'{self.rate_rules[name].expr}': {exc}")
                continue
            p_unit = units.get(param_symbols[name])
            if p_unit is None or actual in (ANY, UNKNOWN):
                continue
            if sp.simplify(actual / (p_unit / time_unit)) != 1:
                errors.add(where, f"d{name}/dt = '{self.rate_rules[name].expr}' has unit '{format_unit(actual)}' but must be "
                           f"'{format_unit(p_unit / time_unit)}' (the parameter's unit per {self.time_unit})")
        for name, trigger in (triggers or {}).items():
            try:
                unit_of(trigger, units)  # both sides of every comparison in one unit
            except UnitError as exc:
                errors.add(f"events.{name}", f"trigger '{self.events[name].trigger}': {exc}")
        for name, assigns in (event_assigns or {}).items():
            for target, expr in assigns.items():
                symbol = state_symbols.get(target, param_symbols.get(target))
                try:
                    actual = unit_of(expr, units)
                except UnitError as exc:
                    errors.add(f"events.{name}", f"assign {target}: {exc}")
                    continue
                declared = units.get(symbol)
                if declared is not None and actual not in (ANY, UNKNOWN) and sp.simplify(actual / declared) != 1:
                    errors.add(f"events.{name}", f"assign {target} = '{self.events[name].assign[target]}' has unit "
                               f"'{format_unit(actual)}' but {target} is in '{format_unit(declared)}'")
        for r in self.reactions.values():
            if r.name not in rates:
                continue
            where = f"reactions.{r.name}"
            reactants, products = stoichiometry[r.name]
            pools = [n for n in [*reactants, *products] if n in self.compartments]
            known = {n: units[state_symbols[n]] for n in pools if state_symbols[n] in units}
            distinct = []
            for n, u in known.items():
                if not any(sp.simplify(u / known[m]) == 1 for m in distinct):
                    distinct.append(n)
            if len(distinct) > 1:
                errors.add(where, f"connects pools in different units ({', '.join(f'{n} in {self.compartments[n].unit!r}' for n in distinct)}); "
                           "stoichiometry counts units of one quantity, so every pool of a reaction needs the same unit")
                continue
            try:
                actual = unit_of(rates[r.name], units)
            except UnitError as exc:
                errors.add(where, f"rate '{r.rate}': {exc}")
                continue
            if not distinct or actual in (ANY, UNKNOWN):
                continue
            expected = known[distinct[0]] / time_unit
            if sp.simplify(actual / expected) != 1:
                errors.add(where, f"rate '{r.rate}' has unit '{format_unit(actual)}' but must be '{format_unit(expected)}' "
                           f"(the unit of its pools per {self.time_unit})")
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
        """Default values; a value given as an expression of other parameters is evaluated."""
        if not any(isinstance(p.value, (str, sp.Basic)) for p in self.parameters.values()):
            return {n: float(p.value) for n, p in self.parameters.items()}
        sym = self.symbolic()
        base = {s: float(self.parameters[s.name].value) for s in sym.parameters if s.name not in sym.parameter_expressions}
        moving = dict(zip(sym.rate_rule_names, sym.initial[sym.n_pools:]))
        out = {}
        for n, p in self.parameters.items():
            expr = sym.parameter_expressions.get(n, moving.get(n))
            out[n] = float(expr.xreplace(base)) if expr is not None else float(p.value)
        return out

    def make_params(self, **overrides):
        """An :class:`lmfit.Parameters` with this model's values, bounds and fixed flags."""
        import lmfit

        params = lmfit.Parameters()
        values = self.parameter_values()
        for p in self.parameters.values():
            computed = isinstance(p.value, (str, sp.Basic))  # recomputed from others at every start
            value = overrides.get(p.name, values[p.name])
            params.add(p.name, value=float(value), min=min(p.min, value), max=max(p.max, value), vary=not (p.fixed or computed))
        return params

    def _repr_html_(self) -> str:
        """Tables of compartments, parameters, flows and observables (for notebooks)."""
        import html

        def table(title, header, rows):
            if not rows:
                return ""
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                           for row in rows)
            return f"<p><b>{html.escape(title)}</b></p><table><tr>{head}</tr>{body}</table>"

        return (f"<p><b>Model {html.escape(self.name)}</b> (time unit {html.escape(str(self.time_unit))})</p>"
                + table("compartments", ["name", "initial", "unit"],
                        [(c.name, c.initial, c.unit) for c in self.compartments.values()])
                + table("parameters", ["name", "value", "min", "max", "unit", "fixed"],
                        [(p.name, p.value, p.min, p.max, p.unit, p.fixed) for p in self.parameters.values()])
                + table("flows", ["name", "rate", "from", "to"],
                        [(f.name, f.rate, f.source or "(outside)", f.target or "(outside)") for f in self.flows.values()])
                + table("observables", ["name", "expression", "unit"],
                        [(o.name, o.expr, o.unit) for o in self.observables.values()]))

    def __repr__(self):
        return (f"<Model '{self.name}': {len(self.compartments)} compartments, {len(self.parameters)} parameters, "
                f"{len(self.flows)} flows, {len(self.observables)} observables>")


def load_model(path) -> Model:
    """Read and validate a model file: TOML (see DESIGN.md for the format), or SBML for a
    ``.xml`` file (needs python-libsbml, see :mod:`kinetics.io.sbml`)."""
    if Path(path).suffix.lower() == ".xml":
        model = load_sbml(path)
        model.sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return model
    return Model.from_file(path)


def load_sbml(source) -> Model:
    """An SBML model (a file path or XML text) as a :class:`Model` (needs python-libsbml; see
    :mod:`kinetics.io.sbml` for what is supported and what is refused)."""
    from ..io.sbml import translate_sbml
    translation = translate_sbml(source)
    origin = translation.source if translation.source != "SBML text" else None
    default = Path(origin).stem if origin else "sbml_model"
    return Model.from_dict(translation.model, source=origin or "SBML text", default_name=default)
