"""SBML (Level 2 version 4 to Level 3 version 2) in and out.

Import reads a model with python-libsbml (the optional extra ``kinetics[sbml]``) and translates
it into the general model form (a model dict for :meth:`kinetics.Model.from_dict`), walking
libsbml's MathML trees and writing kinetics' own expression text: the result goes through the
same safe parser as a model file, so an SBML file never executes code.

How SBML maps onto the general form:

- A species changed by reactions (or by nothing) is a pool: the state is its amount (a boundary
  species is a boundary pool, which reactions read but do not change). Where the
  SBML math names a species in concentration units (``hasOnlySubstanceUnits`` false), the symbol
  becomes ``(S / C)`` with C its compartment's size; an initial concentration becomes the amount
  ``conc * C``.
- A species with an assignment rule is an assignment; one with a rate rule and a constant
  species is a parameter holding the SBML value of the species (its
  concentration, or its amount with ``hasOnlySubstanceUnits``), so rules and events act on it
  exactly as SBML says.
- Compartments of constant size, global parameters and reactions' local parameters (renamed
  ``<reaction>_<id>``) are parameters; initial assignments become their value expressions (or
  a pool's initial amount), resolved to expressions of parameters.
- Reactions keep their stoichiometry (constant, including values from initial assignments);
  the kinetic law is the rate in amount per time, as in kinetics.
- Function definitions are inlined; ``time`` is ``t``; ``avogadro`` is its SBML value.
- Events without delay keep their trigger, ``initialValue`` (``fire_at_start``), ``persistent``
  and assignments (evaluated with the values at trigger time).

Everything else is refused with :class:`SbmlUnsupported`, naming the element and its id:
delays, algebraic rules, fast reactions, compartments of changing size that hold species,
event priorities, variable stoichiometry, ``rateOf``, conversion factors, packages that change
the mathematics. Nothing is approximated.

Export (:func:`write_sbml`) writes any kinetics model as SBML Level 3 version 2.
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError
from ..model.expressions import RESERVED

__all__ = ["SbmlUnsupported", "SbmlTranslation", "translate_sbml", "read_sbml", "write_sbml",
           "AVOGADRO"]

#: The value of the ``avogadro`` csymbol fixed by SBML Level 3.
AVOGADRO = 6.02214179e23

#: Packages that leave the mathematics alone (drawing, grouping; libsbml lists L3v2 core math as
#: the "l3v2extendedmath" plugin).
_HARMLESS_PACKAGES = {"layout", "render", "groups", "l3v2extendedmath"}


class SbmlUnsupported(ModelError):
    """The SBML model uses a construct kinetics cannot simulate faithfully (it is refused, not
    approximated)."""


def _libsbml():
    try:
        import libsbml
    except ImportError:
        raise ModelError("reading or writing SBML needs python-libsbml: pip install 'kinetics[sbml]'") from None
    return libsbml


@dataclass
class SbmlTranslation:
    """An imported SBML model: the model dict and how to read every SBML quantity from it.

    ``outputs`` maps each SBML id (species, parameter, compartment, reaction) to expressions in
    the kinetics model: ``"value"`` (what the id means in SBML math), and for species
    ``"amount"`` and ``"concentration"``. ``names`` maps SBML ids to kinetics names where they
    differ (a reserved word, a local parameter)."""
    model: dict
    outputs: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    level: int = 3
    version: int = 2
    source: str = ""


def _number_text(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(value)
    if value == int(value) and abs(value) < 1e15:
        text = str(int(value))
    else:
        text = repr(float(value))
    return f"({text})" if text.startswith("-") else text


def _read_document(source):
    libsbml = _libsbml()
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    if isinstance(source, str) and source.lstrip().startswith("<"):
        origin = "SBML text"
        doc = libsbml.readSBMLFromString(source)
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise ModelError(f"{path}: SBML file not found")
        doc = libsbml.readSBMLFromFile(str(path))
    problems = []
    for i in range(doc.getNumErrors()):
        err = doc.getError(i)
        if err.getSeverity() >= libsbml.LIBSBML_SEV_ERROR:
            problems.append(f"line {err.getLine()}: {err.getMessage().strip()}")
    if problems:
        raise ModelError(f"{origin}: not valid SBML: " + "; ".join(problems[:5])
                         + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    if doc.getModel() is None:
        raise ModelError(f"{origin}: the SBML document has no <model>")
    return doc, origin


class _Translator:
    """One SBML model -> the general model dict."""

    def __init__(self, doc, origin):
        self.libsbml = _libsbml()
        self.doc = doc
        self.origin = origin
        self.m = doc.getModel()
        self.level, self.version = doc.getLevel(), doc.getVersion()
        self.local_names: dict[tuple, str] = {}
        self.local_values: dict[str, float] = {}
        self._stoich_values: dict[tuple, float] = {}

    # ------------------------------------------------------------------ helpers
    def refuse(self, element, ident, what):
        label = f"<{element} id=\"{ident}\">" if ident else f"<{element}>"
        raise SbmlUnsupported(f"{self.origin}: {label} {what}; kinetics refuses it rather than approximate")

    def fail(self, element, ident, what):
        label = f"<{element} id=\"{ident}\">" if ident else f"<{element}>"
        raise ModelError(f"{self.origin}: {label} {what}")

    def _kinetics_name(self, sbml_id):
        name = sbml_id
        while name in RESERVED or keyword.iskeyword(name) or name in self.taken:
            name += "_"
        self.taken.add(name)
        if name != sbml_id:
            self.names[sbml_id] = name
        return name

    # ------------------------------------------------------------------ checks
    def check_scope(self):
        if (self.level, self.version) < (2, 4):
            self.refuse("sbml", "", f"is SBML Level {self.level} version {self.version}; kinetics reads Level 2 "
                        "version 4 to Level 3 version 2 (convert it with libsbml's setLevelAndVersion first)")
        for i in range(self.doc.getNumPlugins()):
            package = self.doc.getPlugin(i).getPackageName()
            if package not in _HARMLESS_PACKAGES:
                self.refuse("sbml", "", f"uses the SBML package '{package}'")
        unknown = getattr(self.doc, "getNumUnknownPackages", lambda: 0)()
        for i in range(unknown):
            if self.doc.getUnknownPackageRequired(i) if hasattr(self.doc, "getUnknownPackageRequired") else True:
                self.refuse("sbml", "", f"requires the unknown SBML package {self.doc.getUnknownPackageURI(i)}")
        m = self.m
        if m.getNumConstraints():
            pass  # constraints only assert; they do not change a simulation
        for rule in m.getListOfRules():
            if rule.isAlgebraic():
                self.refuse("algebraicRule", "", "is an algebraic rule (a DAE)")
        for r in m.getListOfReactions():
            if r.isSetFast() and r.getFast():
                self.refuse("reaction", r.getId(), "is a fast reaction")
        for e in m.getListOfEvents():
            if e.isSetDelay():
                self.refuse("event", e.getId(), "has a delay")
            if e.isSetPriority():
                self.refuse("event", e.getId(), "has a priority")
        if self.level == 3 and m.isSetConversionFactor():
            self.refuse("model", m.getId(), "has a conversionFactor")
        for s in m.getListOfSpecies():
            if self.level == 3 and s.isSetConversionFactor():
                self.refuse("species", s.getId(), "has a conversionFactor")

    # ------------------------------------------------------------------ math
    def math_text(self, node, scope, *, element, ident, boolean=False, depth=0):
        """MathML tree -> kinetics expression text. ``scope`` maps names to text (function
        arguments, local parameters); other names resolve through :meth:`name_text`."""
        try:
            return self._math(node, scope, boolean, depth, element, ident)
        except RecursionError:
            self.refuse(element, ident, "has math nested too deeply")

    def _math(self, node, scope, boolean, depth, element, ident):
        L = self.libsbml
        if depth > 200:
            self.refuse(element, ident, "has math nested too deeply")
        if node is None:
            self.fail(element, ident, "has no math")
        t = node.getType()
        d = depth + 1

        def num(child):
            return self._math(child, scope, False, d, element, ident)

        def cond(child):
            return self._math(child, scope, True, d, element, ident)

        def kids():
            return [node.getChild(i) for i in range(node.getNumChildren())]

        def as_requested(text, is_boolean):
            if boolean and not is_boolean:
                return f"({text} != 0)"
            if not boolean and is_boolean:
                return f"piecewise(1, {text}, 0)"
            return text

        # numbers and constants
        if t == L.AST_INTEGER:
            return as_requested(_number_text(node.getInteger()), False)
        if t in (L.AST_REAL, L.AST_REAL_E):
            value = node.getReal()
            if math.isnan(value) or math.isinf(value):
                # SBML defines such values (a constant stays inf; NaN propagates), but kinetics
                # guarantees finite parameters and results (fits, sensitivities and reports rely on it)
                self.refuse(element, ident, f"uses the number {value} (infinity or NaN): kinetics values are finite "
                                            "numbers (a parameter, state or output cannot hold inf or NaN); give it a "
                                            "finite value in the SBML file, or remove it if nothing uses it")
            return as_requested(_number_text(value), False)
        if t == L.AST_RATIONAL:
            return as_requested(f"({node.getNumerator()} / {node.getDenominator()})", False)
        # e and pi as the doubles SBML tools compute with (a comparison with a computed value
        # then behaves as it does numerically)
        if t == L.AST_CONSTANT_E:
            return as_requested(repr(math.e), False)
        if t == L.AST_CONSTANT_PI:
            return as_requested(repr(math.pi), False)
        if t == L.AST_CONSTANT_TRUE:
            return as_requested("(1 > 0)", True)
        if t == L.AST_CONSTANT_FALSE:
            return as_requested("(1 < 0)", True)
        if t == L.AST_NAME_TIME:
            return as_requested("0" if self.initial_context else "t", False)  # initial values: at t = 0
        if t == L.AST_NAME_AVOGADRO:
            return as_requested(_number_text(AVOGADRO), False)
        if t == L.AST_NAME:
            name = node.getName()
            if name in scope:
                return as_requested(scope[name], False)
            return as_requested(self.name_text(name, element, ident), False)
        # arithmetic
        if t == L.AST_PLUS:
            parts = [num(c) for c in kids()]
            return as_requested("(" + " + ".join(parts) + ")" if parts else "0", False)
        if t == L.AST_TIMES:
            parts = [num(c) for c in kids()]
            return as_requested("(" + " * ".join(parts) + ")" if parts else "1", False)
        if t == L.AST_MINUS:
            parts = [num(c) for c in kids()]
            if len(parts) == 1:
                return as_requested(f"(-{parts[0]})", False)
            if len(parts) != 2:
                self.fail(element, ident, f"has a minus with {len(parts)} arguments")
            return as_requested(f"({parts[0]} - {parts[1]})", False)
        if t == L.AST_DIVIDE:
            a, b = kids()
            return as_requested(f"({num(a)} / {num(b)})", False)
        if t in (L.AST_POWER, L.AST_FUNCTION_POWER):
            a, b = kids()
            return as_requested(f"({num(a)} ** {num(b)})", False)
        # functions of one argument
        simple = {
            L.AST_FUNCTION_EXP: "exp({})", L.AST_FUNCTION_LN: "log({})", L.AST_FUNCTION_ABS: "abs({})",
            L.AST_FUNCTION_FLOOR: "floor({})", L.AST_FUNCTION_CEILING: "ceiling({})",
            L.AST_FUNCTION_FACTORIAL: "factorial({})",
            L.AST_FUNCTION_SIN: "sin({})", L.AST_FUNCTION_COS: "cos({})", L.AST_FUNCTION_TAN: "tan({})",
            L.AST_FUNCTION_SEC: "(1 / cos({}))", L.AST_FUNCTION_CSC: "(1 / sin({}))",
            L.AST_FUNCTION_COT: "(1 / tan({}))",
            L.AST_FUNCTION_SINH: "sinh({})", L.AST_FUNCTION_COSH: "cosh({})", L.AST_FUNCTION_TANH: "tanh({})",
            L.AST_FUNCTION_SECH: "(1 / cosh({}))", L.AST_FUNCTION_CSCH: "(1 / sinh({}))",
            L.AST_FUNCTION_COTH: "(1 / tanh({}))",
            L.AST_FUNCTION_ARCSIN: "asin({})", L.AST_FUNCTION_ARCCOS: "acos({})", L.AST_FUNCTION_ARCTAN: "atan({})",
            L.AST_FUNCTION_ARCSEC: "acos(1 / {})", L.AST_FUNCTION_ARCCSC: "asin(1 / {})",
            L.AST_FUNCTION_ARCCOT: "atan(1 / {})",
            L.AST_FUNCTION_ARCSINH: "asinh({})", L.AST_FUNCTION_ARCCOSH: "acosh({})",
            L.AST_FUNCTION_ARCTANH: "atanh({})",
            L.AST_FUNCTION_ARCSECH: "acosh(1 / {})", L.AST_FUNCTION_ARCCSCH: "asinh(1 / {})",
            L.AST_FUNCTION_ARCCOTH: "atanh(1 / {})",
        }
        if t in simple:
            if node.getNumChildren() != 1:
                self.fail(element, ident, f"calls {node.getName()} with {node.getNumChildren()} arguments")
            if t == L.AST_FUNCTION_FACTORIAL and self.initial_context is not None:
                argument = num(node.getChild(0))
                whole_step = node.getChild(0).getType() in (L.AST_FUNCTION_FLOOR, L.AST_FUNCTION_CEILING)
                if not whole_step and self._evaluate_constant(argument) is None:
                    self.refuse(element, ident, f"takes the factorial of '{argument}', which varies (kinetics "
                                "takes factorials of constant numbers and of floor/ceiling only)")
            return as_requested(simple[t].format(num(node.getChild(0))), False)
        if t == L.AST_FUNCTION_LOG:
            args = kids()
            if len(args) == 1:
                return as_requested(f"log10({num(args[0])})", False)
            base, x = args
            return as_requested(f"(log({num(x)}) / log({num(base)}))", False)
        if t == L.AST_FUNCTION_ROOT:
            args = kids()
            if len(args) == 1:
                return as_requested(f"sqrt({num(args[0])})", False)
            degree, x = args
            degree_text = num(degree)
            if degree_text == "2":
                return as_requested(f"sqrt({num(x)})", False)
            return as_requested(f"({num(x)} ** (1 / {degree_text}))", False)
        if t in (L.AST_FUNCTION_MIN, L.AST_FUNCTION_MAX):
            parts = [num(c) for c in kids()]
            if not parts:
                self.fail(element, ident, "calls min/max without arguments")
            fn = "min" if t == L.AST_FUNCTION_MIN else "max"
            return as_requested(parts[0] if len(parts) == 1 else f"{fn}({', '.join(parts)})", False)
        if t == L.AST_FUNCTION_PIECEWISE:
            args = kids()
            if len(args) % 2 == 0:
                self.refuse(element, ident, "has a piecewise without <otherwise> (undefined where no piece holds)")
            if len(args) == 1:
                return self._math(args[0], scope, boolean, d, element, ident)
            parts = []
            for i in range(0, len(args) - 1, 2):
                parts += [num(args[i]), cond(args[i + 1])]
            parts.append(num(args[-1]))
            return as_requested(f"piecewise({', '.join(parts)})", False)
        # logic and relations
        relations = {L.AST_RELATIONAL_EQ: "==", L.AST_RELATIONAL_NEQ: "!=", L.AST_RELATIONAL_GT: ">",
                     L.AST_RELATIONAL_GEQ: ">=", L.AST_RELATIONAL_LT: "<", L.AST_RELATIONAL_LEQ: "<="}
        if t in relations:
            parts = [num(c) for c in kids()]
            if len(parts) < 2:
                self.fail(element, ident, f"compares fewer than two values with '{relations[t]}'")
            if t == L.AST_RELATIONAL_NEQ and len(parts) != 2:
                self.fail(element, ident, "uses neq with more than two arguments")
            pairs = [f"({parts[i]} {relations[t]} {parts[i + 1]})" for i in range(len(parts) - 1)]
            return as_requested(pairs[0] if len(pairs) == 1 else "(" + " and ".join(pairs) + ")", True)
        if t in (L.AST_LOGICAL_AND, L.AST_LOGICAL_OR):
            parts = [cond(c) for c in kids()]
            if not parts:
                return as_requested("(1 > 0)" if t == L.AST_LOGICAL_AND else "(1 < 0)", True)
            joiner = " and " if t == L.AST_LOGICAL_AND else " or "
            return as_requested("(" + joiner.join(parts) + ")", True)
        if t == L.AST_LOGICAL_NOT:
            (a,) = kids()
            return as_requested(f"(not {cond(a)})", True)
        if t == L.AST_LOGICAL_XOR:
            parts = [cond(c) for c in kids()]
            if not parts:
                return as_requested("(1 < 0)", True)
            acc = parts[0]
            for p in parts[1:]:
                acc = f"(({acc} and (not {p})) or ((not {acc}) and {p}))"
            return as_requested(acc, True)
        if t == L.AST_LOGICAL_IMPLIES:
            a, b = kids()
            return as_requested(f"((not {cond(a)}) or {cond(b)})", True)
        # user functions: inlined
        if t == L.AST_FUNCTION:  # the body is read as a number or a condition, as the caller wants
            return self.call_text(node, scope, d, element, ident, boolean)
        if t == L.AST_FUNCTION_DELAY:
            self.refuse(element, ident, "uses delay()")
        if t == L.AST_FUNCTION_RATE_OF:
            self.refuse(element, ident, "uses rateOf()")
        name = node.getName() or self.libsbml.formulaToL3String(node)
        self.refuse(element, ident, f"uses the MathML construct '{name}'")

    def call_text(self, node, scope, depth, element, ident, boolean=False):
        name = node.getName()
        fd = self.m.getFunctionDefinition(name)
        if fd is None:
            self.fail(element, ident, f"calls the undefined function '{name}'")
        body = fd.getBody()
        if body is None:
            self.fail("functionDefinition", name, "has no body")
        n_args = fd.getNumArguments()
        if node.getNumChildren() != n_args:
            self.fail(element, ident, f"calls '{name}' with {node.getNumChildren()} arguments; it takes {n_args}")
        args = [self._math(node.getChild(i), scope, False, depth, element, ident) for i in range(n_args)]
        inner = {fd.getArgument(i).getName(): f"({args[i]})" for i in range(n_args)}
        return self._math(body, inner, boolean, depth + 1, element, ident)

    # ------------------------------------------------------------------ names
    def name_text(self, sbml_id, element, ident):
        """What an SBML id in math means, as kinetics text (in the current context)."""
        if self.initial_context is None:  # probing for math without names
            raise ModelError(sbml_id)
        if self.initial_context:
            return self.initial_text(sbml_id, element, ident)
        kind = self.kind.get(sbml_id)
        if kind is None:
            self.fail(element, ident, f"uses the unknown id '{sbml_id}'")
        if kind == "pool":
            return self.pool_value_text(sbml_id)
        if kind == "stoichiometry":
            return f"({self.stoichiometry[sbml_id]})"
        return self.kname[sbml_id]

    def pool_value_text(self, sbml_id):
        name = self.kname[sbml_id]
        if self.amount_valued[sbml_id]:
            return name
        return f"({name} / {self.kname[self.species_compartment[sbml_id]]})"

    def initial_text(self, sbml_id, element, ident):
        """An id's value at the start, as an expression of parameters."""
        kind = self.kind.get(sbml_id)
        if kind is None:
            self.fail(element, ident, f"uses the unknown id '{sbml_id}'")
        if kind in ("parameter", "stoichiometry"):
            return self.kname[sbml_id] if kind == "parameter" else f"({self.stoichiometry[sbml_id]})"
        if sbml_id in self.resolving:
            self.fail(element, ident, f"has initial values that depend on each other in a cycle through '{sbml_id}'")
        if sbml_id in self.initial_cache:
            return self.initial_cache[sbml_id]
        self.resolving.add(sbml_id)
        try:
            if kind == "pool":
                amount = self.pool_initial_amount(sbml_id)
                text = amount if self.amount_valued[sbml_id] else \
                    f"({amount} / {self.kname[self.species_compartment[sbml_id]]})"
            elif kind == "assignment":
                rule = self.m.getAssignmentRuleByVariable(sbml_id)
                text = f"({self.math_text(rule.getMath(), {}, element='assignmentRule', ident=sbml_id)})"
            elif kind == "reaction":
                text = f"({self.reaction_rate_text(sbml_id)})"
            else:  # pragma: no cover - every kind is handled above
                raise AssertionError(kind)
        finally:
            self.resolving.discard(sbml_id)
        self.initial_cache[sbml_id] = text
        return text

    def in_initial_context(self, fn, *args, **kwargs):
        previous = self.initial_context
        self.initial_context = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.initial_context = previous

    # ------------------------------------------------------------------ model
    def translate(self) -> SbmlTranslation:
        self.check_scope()
        L = self.libsbml
        m = self.m
        self.taken: set[str] = set()
        self.names: dict[str, str] = {}
        self.kname: dict[str, str] = {}
        self.kind: dict[str, str] = {}
        self.initial_context = False
        self.resolving: set[str] = set()
        self.initial_cache: dict[str, str] = {}
        self.stoichiometry: dict[str, str] = {}
        self.amount_valued: dict[str, bool] = {}
        self.species_compartment: dict[str, str] = {}
        self.boundary: set[str] = set()

        assigned = self.assigned = {r.getVariable() for r in m.getListOfRules() if r.isAssignment()}
        rated = {r.getVariable() for r in m.getListOfRules() if r.isRate()}
        event_targets = {ea.getVariable() for e in m.getListOfEvents() for ea in e.getListOfEventAssignments()}
        initial_assignment = {ia.getSymbol(): ia for ia in m.getListOfInitialAssignments()}
        in_reactions = set()
        for r in m.getListOfReactions():
            for ref in list(r.getListOfReactants()) + list(r.getListOfProducts()):
                in_reactions.add(ref.getSpecies())

        # names first (every id may appear in any math)
        for c in m.getListOfCompartments():
            self.kname[c.getId()] = self._kinetics_name(c.getId())
        for s in m.getListOfSpecies():
            self.kname[s.getId()] = self._kinetics_name(s.getId())
        for p in m.getListOfParameters():
            self.kname[p.getId()] = self._kinetics_name(p.getId())
        for r in m.getListOfReactions():
            self.kname[r.getId()] = self._kinetics_name(r.getId())

        compartments_with_species = {s.getCompartment() for s in m.getListOfSpecies()}
        parameters: dict[str, dict] = {}
        pools: dict[str, dict] = {}
        assignments: dict[str, str] = {}
        rates: dict[str, str] = {}
        pending_values: dict[str, tuple] = {}  # kinetics parameter -> (element, id, value getter)
        outputs: dict[str, dict] = {}

        constant_rules = self.constant_assignment_rules()
        for c in m.getListOfCompartments():
            cid = c.getId()
            if cid in constant_rules:  # an assignment rule to a fixed number: a constant size
                assigned.discard(cid)
                parameters[cid] = {"fixed": True}
                pending_values[cid] = ("assignmentRule", cid, constant_rules[cid])
                self.kind[cid] = "parameter"
                outputs[cid] = {"value": self.kname[cid]}
                continue
            changing = cid in assigned or cid in rated or cid in event_targets
            if changing and cid in compartments_with_species:
                self.refuse("compartment", cid, "changes size during the simulation and holds species")
            if cid in assigned:
                self.kind[cid] = "assignment"
            else:
                self.kind[cid] = "parameter"
                if cid in initial_assignment:
                    pending_values[cid] = ("initialAssignment", cid, initial_assignment[cid].getMath())
                elif c.isSetSize():
                    pending_values[cid] = ("compartment", cid, c.getSize())
                elif self.level == 2 and c.getSpatialDimensions() == 0:
                    self.refuse("compartment", cid, "has zero dimensions")
                else:
                    self.fail("compartment", cid, "has no size (set 'size' or an initialAssignment)")
                parameters[cid] = {"fixed": True}
            outputs[cid] = {"value": self.kname[cid]}

        for p in m.getListOfParameters():
            pid = p.getId()
            if pid in assigned:
                self.kind[pid] = "assignment"
            else:
                self.kind[pid] = "parameter"
                if pid in initial_assignment:
                    pending_values[pid] = ("initialAssignment", pid, initial_assignment[pid].getMath())
                elif p.isSetValue():
                    pending_values[pid] = ("parameter", pid, p.getValue())
                else:
                    self.fail("parameter", pid, "has no value (set 'value' or an initialAssignment)")
                parameters[pid] = {"fixed": bool(p.getConstant())}
            outputs[pid] = {"value": self.kname[pid]}

        for s in m.getListOfSpecies():
            sid = s.getId()
            comp = m.getCompartment(s.getCompartment())
            if comp is None:
                self.fail("species", sid, f"lives in the unknown compartment '{s.getCompartment()}'")
            self.species_compartment[sid] = comp.getId()
            amount_valued = bool(s.getHasOnlySubstanceUnits()) or comp.getSpatialDimensions() == 0
            self.amount_valued[sid] = amount_valued
            if sid in assigned:
                self.kind[sid] = "assignment"
            elif sid in rated or s.getConstant():
                # not moved by reactions: a parameter holding the SBML value of the species
                self.kind[sid] = "parameter"
                if sid in initial_assignment:
                    pending_values[sid] = ("initialAssignment", sid, initial_assignment[sid].getMath())
                else:
                    pending_values[sid] = ("species", sid, self.species_initial_value(s, comp, amount_valued))
                parameters[sid] = {"fixed": True}
            else:
                self.kind[sid] = "pool"
                if sid in rated:  # pragma: no cover - caught above
                    raise AssertionError
                pools[sid] = {"volume": self.kname[comp.getId()]}
                if s.getBoundaryCondition():
                    pools[sid]["boundary"] = True  # reactions read it but do not change it
                    self.boundary.add(sid)
            c_name = self.kname[comp.getId()]
            value = self.pool_value_text(sid) if self.kind[sid] == "pool" else self.kname[sid]
            if self.kind[sid] == "pool":
                amount = self.kname[sid]
                concentration = f"({amount} / {c_name})"
            elif amount_valued:
                amount, concentration = value, f"({value} / {c_name})"
            else:
                amount, concentration = f"({value} * {c_name})", value
            outputs[sid] = {"value": value, "amount": amount, "concentration": concentration}

        for r in m.getListOfReactions():
            self.kind[r.getId()] = "reaction"
            for ref in list(r.getListOfReactants()) + list(r.getListOfProducts()):
                if ref.isSetId() and ref.getId():
                    self.kind[ref.getId()] = "stoichiometry"
                    self.kname[ref.getId()] = self._kinetics_name(ref.getId())

        # stoichiometries (constant) before any math that may name them
        for r in m.getListOfReactions():
            for side, refs in enumerate((r.getListOfReactants(), r.getListOfProducts())):
                for i, ref in enumerate(refs):
                    self._stoich_values[(r.getId(), side, i)] = self.stoichiometry_of(
                        ref, r, initial_assignment, assigned | rated | event_targets)

        # parameter values and initial amounts
        for pid, (element, ident, value) in pending_values.items():
            if isinstance(value, (int, float)):
                if math.isnan(value) or math.isinf(value):
                    self.refuse(element, ident, f"has the value {value}")
                parameters[pid]["value"] = float(value)
            elif isinstance(value, str):
                parameters[pid]["value"] = value
            else:
                text = self.in_initial_context(self.math_text, value, {}, element=element, ident=ident)
                parameters[pid]["value"] = self._constant_or_text(text)
        # stoichiometries set by initial assignments: numbers at the start (they are constant)
        for key, value in self._stoich_values.items():
            if isinstance(value, str):
                number = self._evaluate_with(value, parameters)
                if number is None:
                    self.refuse("initialAssignment", key[0], f"sets a stoichiometry to '{value}', which is not a "
                                "constant number")
                self._stoich_values[key] = number
        for ref_id, text in list(self.stoichiometry.items()):
            number = self._evaluate_with(text, parameters)
            if number is None:
                self.refuse("initialAssignment", ref_id, f"sets a stoichiometry to '{text}', which is not a constant number")
            self.stoichiometry[ref_id] = _number_text(number)
        for sid, entry in pools.items():
            entry["initial"] = self._constant_or_text(self.in_initial_context(self.pool_initial_amount, sid))

        # rules
        for rule in m.getListOfRules():
            var = rule.getVariable()
            element = "assignmentRule" if rule.isAssignment() else "rateRule"
            kind = self.kind.get(var)
            if kind is None:
                if var in self.stoichiometry:
                    self.refuse(element, var, "changes a stoichiometry (variable stoichiometry)")
                self.fail(element, var, f"sets the unknown id '{var}'")
            if var in self.constant_rules and kind in ("parameter", "stoichiometry"):
                continue  # a constant, taken as a value above
            text = self.math_text(rule.getMath(), {}, element=element, ident=var)
            if rule.isAssignment():
                assignments[self.kname[var]] = text
            else:
                if kind != "parameter":
                    self.refuse(element, var, "changes a quantity that reactions also change")
                rates[self.kname[var]] = text

        # reactions
        reactions = {}
        referenced = self.referenced_reactions()
        for r in m.getListOfReactions():
            rid = r.getId()
            rate = self.reaction_rate_text(rid)
            reactants, products = {}, {}
            for side_index, (refs, side) in enumerate(((r.getListOfReactants(), reactants),
                                                       (r.getListOfProducts(), products))):
                for i, ref in enumerate(refs):
                    sid = ref.getSpecies()
                    if self.kind.get(sid) != "pool" or sid in self.boundary:
                        continue  # boundary, constant and rule-driven species are not moved by reactions
                    coefficient = self._stoich_values[(rid, side_index, i)]
                    if coefficient == 0:
                        continue
                    side[self.kname[sid]] = side.get(self.kname[sid], 0.0) + coefficient
                    if side[self.kname[sid]] == 0:
                        del side[self.kname[sid]]
            # a negative coefficient moves the species to the other side
            for side, other in ((reactants, products), (products, reactants)):
                for name, value in list(side.items()):
                    if value < 0:
                        del side[name]
                        other[name] = other.get(name, 0.0) - value
            name = self.kname[rid]
            if rid in referenced:
                assignments[name] = rate
                reaction_name = self._kinetics_name(rid + "_reaction")
                rate = name
            else:
                reaction_name = name
            outputs[rid] = {"value": name if rid in referenced else f"({rate})"}
            if not reactants and not products:
                continue
            reactions[reaction_name] = {"reactants": {k: _int_or_float(v) for k, v in reactants.items()},
                                        "products": {k: _int_or_float(v) for k, v in products.items()},
                                        "rate": rate}

        # events
        events = {}
        for index, e in enumerate(m.getListOfEvents()):
            eid = e.getId() or f"event_{index + 1}"
            trigger = e.getTrigger()
            if trigger is None or trigger.getMath() is None:
                continue  # L3v2: an event without a trigger never fires
            trigger_text = self.math_text(trigger.getMath(), {}, element="trigger", ident=eid, boolean=True)
            assign = {}
            for ea in e.getListOfEventAssignments():
                var = ea.getVariable()
                kind = self.kind.get(var)
                if var in self.stoichiometry:
                    self.refuse("eventAssignment", var, "changes a stoichiometry (variable stoichiometry)")
                if kind is None:
                    self.fail("eventAssignment", var, f"in event '{eid}' sets the unknown id '{var}'")
                if kind not in ("pool", "parameter"):
                    self.refuse("eventAssignment", var, f"in event '{eid}' sets a {kind}")
                if ea.getMath() is None:
                    continue
                text = self.math_text(ea.getMath(), {}, element="eventAssignment", ident=var)
                if kind == "pool" and not self.amount_valued[var]:
                    text = f"({text}) * {self.kname[self.species_compartment[var]]}"
                assign[self.kname[var]] = text
            if not assign:
                continue
            initial_value = trigger.getInitialValue() if self.level == 3 else True
            persistent = trigger.getPersistent() if self.level == 3 else True
            event_name = self._kinetics_name(eid) if e.getId() else self._kinetics_name(eid)
            events[event_name] = {"trigger": trigger_text, "assign": assign,
                                  "fire_at_start": not initial_value, "persistent": bool(persistent)}

        # SBML models rarely keep their units consistent (sin(time) is common): no units are
        # declared, so that kinetics' unit checks have nothing to refuse
        model = {"name": m.getId() or m.getName() or "sbml_model", "time_unit": "dimensionless"}
        if m.isSetName() and m.getName() and m.getName() != model["name"]:
            model["description"] = m.getName()
        model["compartments"] = {self.kname[sid]: e for sid, e in pools.items()}
        if not pools:
            # the general form needs a pool; this one is empty and nothing changes it
            model["compartments"][self._kinetics_name("no_species")] = {"initial": 0}
        model["parameters"] = {self.kname[pid]: e for pid, e in parameters.items()}
        if assignments:
            model["assignments"] = assignments
        if reactions:
            model["reactions"] = reactions
        if rates:
            model["rates"] = rates
        if events:
            model["events"] = events
        return SbmlTranslation(model, outputs, dict(self.names), self.level, self.version, self.origin)

    def constant_assignment_rules(self):
        """Assignment rules whose math is a fixed number (no names), by variable; nothing else
        may change those variables."""
        changed_otherwise = {r.getVariable() for r in self.m.getListOfRules() if r.isRate()}
        changed_otherwise |= {ea.getVariable() for e in self.m.getListOfEvents() for ea in e.getListOfEventAssignments()}
        found = {}
        for rule in self.m.getListOfRules():
            var = rule.getVariable()
            if not rule.isAssignment() or var in changed_otherwise or rule.getMath() is None:
                continue
            self.initial_context = None
            try:
                text = self.math_text(rule.getMath(), {}, element="assignmentRule", ident=var)
            except ModelError:
                continue
            finally:
                self.initial_context = False
            value = self._evaluate_constant(text)
            if value is not None:
                found[var] = value
        self.constant_rules = found
        return found

    def species_initial_value(self, s, comp, amount_valued):
        """A species' SBML value at the start (number or text), from its attributes."""
        size = self.kname[comp.getId()]
        if s.isSetInitialAmount():
            amount = s.getInitialAmount()
            return amount if amount_valued else f"({_number_text(amount)} / {size})"
        if s.isSetInitialConcentration():
            conc = s.getInitialConcentration()
            return f"({_number_text(conc)} * {size})" if amount_valued else conc
        self.fail("species", s.getId(), "has no initial amount or concentration (and no initialAssignment)")

    def pool_initial_amount(self, sid):
        s = self.m.getSpecies(sid)
        comp = self.m.getCompartment(s.getCompartment())
        size = self.kname[comp.getId()]
        ia = self.m.getInitialAssignmentBySymbol(sid)
        if ia is not None:
            text = self.math_text(ia.getMath(), {}, element="initialAssignment", ident=sid)
            return text if self.amount_valued[sid] else f"(({text}) * {size})"
        value = self.species_initial_value(s, comp, True)
        return _number_text(value) if isinstance(value, float) else value

    def stoichiometry_of(self, ref, reaction, initial_assignment, changing):
        rid = ref.getId() if ref.isSetId() else ""
        where = ("speciesReference", rid or ref.getSpecies())
        if self.level == 2 and ref.isSetStoichiometryMath():
            self.refuse(*where, "has stoichiometryMath (variable stoichiometry)")
        if rid and rid in self.constant_rules:  # an assignment rule to a fixed number
            self.kind[rid] = "stoichiometry"
            self.stoichiometry[rid] = _number_text(self.constant_rules[rid])
            return self.constant_rules[rid]
        if rid and rid in changing:
            moved = self.kind.get(ref.getSpecies()) == "pool" and ref.getSpecies() not in self.boundary
            if moved or rid not in self.assigned:
                self.refuse(*where, "has a variable stoichiometry")
            # the species is not moved by reactions: the id is only a named quantity
            self.kind[rid] = "assignment"
            return 0.0
        if rid and rid in initial_assignment:
            text = self.in_initial_context(self.math_text, initial_assignment[rid].getMath(), {},
                                           element="initialAssignment", ident=rid)
            self.stoichiometry[rid] = text
            return text  # evaluated once the parameter values are known
        elif self.level == 3 and not ref.isSetStoichiometry():
            self.fail(*where, f"in reaction '{reaction.getId()}' has no stoichiometry")
        else:
            value = ref.getStoichiometry()
            if rid:
                self.stoichiometry[rid] = _number_text(value)
            return value

    def reaction_rate_text(self, rid):
        r = self.m.getReaction(rid)
        law = r.getKineticLaw()
        if law is None or law.getMath() is None:
            self.refuse("reaction", rid, "has no kinetic law")
        local = law.getListOfLocalParameters() if self.level == 3 else law.getListOfParameters()
        scope = {}
        for p in local:
            name = self.local_parameter(rid, p)
            scope[p.getId()] = name
        return self.math_text(law.getMath(), scope, element="kineticLaw", ident=rid)

    def local_parameter(self, rid, p):
        key = (rid, p.getId())
        if key not in self.local_names:
            if not p.isSetValue():
                self.fail("localParameter", p.getId(), f"of reaction '{rid}' has no value")
            name = self._kinetics_name(f"{self.kname[rid]}_{p.getId()}")
            self.local_names[key] = name
            self.local_values[name] = p.getValue()
        return self.local_names[key]

    def referenced_reactions(self):
        """Reaction ids named in some math (SBML lets a reaction id stand for its rate)."""
        L = self.libsbml
        reaction_ids = {r.getId() for r in self.m.getListOfReactions()}
        found = set()
        maths = [r.getMath() for r in self.m.getListOfRules()]
        maths += [ia.getMath() for ia in self.m.getListOfInitialAssignments()]
        for e in self.m.getListOfEvents():
            if e.getTrigger() is not None:
                maths.append(e.getTrigger().getMath())
            maths += [ea.getMath() for ea in e.getListOfEventAssignments()]
        for r in self.m.getListOfReactions():
            if r.getKineticLaw() is not None:
                maths.append(r.getKineticLaw().getMath())
        for fd in self.m.getListOfFunctionDefinitions():
            maths.append(fd.getMath())
        stack = [x for x in maths if x is not None]
        while stack:
            node = stack.pop()
            if node.getType() == L.AST_NAME and node.getName() in reaction_ids:
                found.add(node.getName())
            stack.extend(node.getChild(i) for i in range(node.getNumChildren()))
        return found

    def _evaluate_with(self, text, parameters):
        """The number ``text`` (an expression of parameters) has with the parameters' start values,
        else None."""
        from ..model.expressions import parse_expression
        import sympy as sp

        values = {}
        for pid, entry in parameters.items():
            values[self.kname[pid]] = entry.get("value")
        values.update(self.local_values)
        symbols = {name: sp.Symbol(name) for name in values}
        try:
            expr = parse_expression(text, symbols, allow_time=False)
            for _ in range(len(values) + 1):  # parameters whose values are expressions of others
                free = expr.free_symbols
                if not free:
                    break
                replacements = {}
                for sym in free:
                    value = values.get(sym.name)
                    if value is None:
                        return None
                    replacements[sym] = parse_expression(value, symbols, allow_time=False)
                expr = expr.xreplace(replacements)
            value = float(expr)
        except (ModelError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    @staticmethod
    def _constant_or_text(text):
        value = _Translator._evaluate_constant(text)
        return value if value is not None else text

    @staticmethod
    def _evaluate_constant(text):
        """The number an expression of numbers stands for, else None (through the safe parser)."""
        from ..model.expressions import parse_expression
        try:
            expr = parse_expression(text, {}, allow_time=False)
        except ModelError:
            return None
        if not expr.is_number:
            return None
        try:
            value = float(expr)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None


def _int_or_float(value):
    value = float(value)
    return int(value) if value.is_integer() else value


def translate_sbml(source) -> SbmlTranslation:
    """Translate an SBML model (a file path or the XML text) into the general model form."""
    doc, origin = _read_document(source)
    translator = _Translator(doc, origin)
    result = translator.translate()
    for name, value in translator.local_values.items():
        result.model["parameters"][name] = {"value": float(value), "fixed": True}
    return result


def read_sbml(source) -> dict:
    """An SBML model (file path or XML text) as a model dict for :meth:`kinetics.Model.from_dict`."""
    return translate_sbml(source).model


# ====================================================================== export

#: kinetics unit names SBML can express exactly: name -> (SBML unit kind, scale, multiplier)
_UNIT_KINDS = {
    "s": ("second", 0, 1.0), "sec": ("second", 0, 1.0), "second": ("second", 0, 1.0),
    "min": ("second", 0, 60.0), "h": ("second", 0, 3600.0), "hr": ("second", 0, 3600.0),
    "hour": ("second", 0, 3600.0), "d": ("second", 0, 86400.0), "day": ("second", 0, 86400.0),
    "L": ("litre", 0, 1.0), "l": ("litre", 0, 1.0), "mL": ("litre", -3, 1.0), "ml": ("litre", -3, 1.0),
    "uL": ("litre", -6, 1.0), "nL": ("litre", -9, 1.0), "pL": ("litre", -12, 1.0), "fL": ("litre", -15, 1.0),
    "mol": ("mole", 0, 1.0), "mmol": ("mole", -3, 1.0), "umol": ("mole", -6, 1.0), "nmol": ("mole", -9, 1.0),
    "pmol": ("mole", -12, 1.0), "g": ("gram", 0, 1.0), "kg": ("kilogram", 0, 1.0), "mg": ("gram", -3, 1.0),
    "ug": ("gram", -6, 1.0), "ng": ("gram", -9, 1.0), "pg": ("gram", -12, 1.0),
    "particles": ("item", 0, 1.0), "particle": ("item", 0, 1.0), "cells": ("item", 0, 1.0),
    "cell": ("item", 0, 1.0), "molecules": ("item", 0, 1.0), "copies": ("item", 0, 1.0),
    "items": ("item", 0, 1.0), "EV": ("item", 0, 1.0), "EVs": ("item", 0, 1.0), "vesicles": ("item", 0, 1.0),
}


class _Exporter:
    """A kinetics model dict (the general form) -> an SBML Level 3 version 2 document."""

    def __init__(self, data: dict):
        self.libsbml = _libsbml()
        self.data = data
        self.doc = self.libsbml.SBMLDocument(3, 2)
        self.m = self.doc.createModel()
        self.unit_ids: dict[str, str | None] = {}

    def check(self, code, what):
        if code not in (None, self.libsbml.LIBSBML_OPERATION_SUCCESS) and isinstance(code, int) and code < 0:
            raise ModelError(f"writing SBML: {what} failed (libsbml code {code})")

    # ------------------------------------------------------------ units
    def unit(self, text):
        """The id of a unitDefinition for a kinetics unit string, or None when SBML cannot
        say it exactly (the attribute is then left out rather than guessed)."""
        if text is None:
            return None
        if text in self.unit_ids:
            return self.unit_ids[text]
        import ast as _ast
        factors = []  # (name, exponent)

        def walk(node, sign):
            if isinstance(node, _ast.BinOp) and isinstance(node.op, (_ast.Mult, _ast.Div)):
                walk(node.left, sign)
                walk(node.right, sign if isinstance(node.op, _ast.Mult) else -sign)
            elif isinstance(node, _ast.BinOp) and isinstance(node.op, _ast.Pow) and isinstance(node.left, _ast.Name) \
                    and isinstance(node.right, _ast.Constant) and isinstance(node.right.value, int):
                factors.append((node.left.id, sign * node.right.value))
            elif isinstance(node, _ast.Name):
                factors.append((node.id, sign))
            elif isinstance(node, _ast.Constant) and node.value == 1:
                pass
            else:
                raise ValueError(text)

        stripped = text.strip()
        try:
            if stripped.lower() in ("", "1", "dimensionless"):
                factors = []
            else:
                walk(_ast.parse(stripped, mode="eval").body, 1)
            if any(name not in _UNIT_KINDS for name, _ in factors):
                raise ValueError(text)
        except (ValueError, SyntaxError):
            self.unit_ids[text] = None
            return None
        uid = "u_" + "".join(ch if ch.isalnum() else "_" for ch in stripped) if factors else "dimensionless_unit"
        while self.m.getUnitDefinition(uid) is not None:
            uid += "_"
        ud = self.m.createUnitDefinition()
        ud.setId(uid)
        ud.setName(stripped or "dimensionless")
        L = self.libsbml
        for name, exponent in factors or [("", 1)]:
            u = ud.createUnit()
            if not name:
                u.setKind(L.UNIT_KIND_DIMENSIONLESS)
                u.setExponent(1.0)
                u.setScale(0)
                u.setMultiplier(1.0)
                continue
            kind, scale, multiplier = _UNIT_KINDS[name]
            u.setKind(L.UnitKind_forName(kind))
            u.setExponent(float(exponent))
            u.setScale(scale)
            u.setMultiplier(multiplier)
        self.unit_ids[text] = uid
        return uid

    # ------------------------------------------------------------ math
    def ast(self, expr):
        import sympy as sp
        from ..model.expressions import TIME

        L = self.libsbml

        def node(kind, *children, name=None):
            n = L.ASTNode(kind)
            if name is not None:
                n.setName(name)
            for c in children:
                n.addChild(c)
            return n

        def number(value):
            n = L.ASTNode(L.AST_REAL)
            n.setValue(float(value))
            return n

        def build(e):
            if e is sp.true:
                return node(L.AST_CONSTANT_TRUE)
            if e is sp.false:
                return node(L.AST_CONSTANT_FALSE)
            if e == TIME or (isinstance(e, sp.Symbol) and e.name == "t"):
                n = node(L.AST_NAME_TIME)
                n.setName("t")
                return n
            if isinstance(e, sp.Symbol):
                return node(L.AST_NAME, name=e.name)
            if e is sp.pi:
                return node(L.AST_CONSTANT_PI)
            if e is sp.E:
                return node(L.AST_CONSTANT_E)
            if isinstance(e, sp.Integer):
                if abs(int(e)) < 2 ** 31:
                    n = L.ASTNode(L.AST_INTEGER)
                    n.setValue(int(e))
                    return n
                return number(e)
            if isinstance(e, sp.Rational):
                return node(L.AST_DIVIDE, build(sp.Integer(e.p)), build(sp.Integer(e.q)))
            if isinstance(e, sp.Float) or e.is_Number:
                return number(e)
            if isinstance(e, sp.NumberSymbol):
                return number(float(e))
            if isinstance(e, sp.Add):
                return node(L.AST_PLUS, *[build(a) for a in e.args])
            if isinstance(e, sp.Mul):
                num, den = [], []
                for a in e.args:
                    if isinstance(a, sp.Pow) and a.exp.is_Number and a.exp < 0:
                        den.append(a.base if a.exp == -1 else sp.Pow(a.base, -a.exp))
                    elif isinstance(a, sp.Rational) and not isinstance(a, sp.Integer) and a.p == 1:
                        den.append(sp.Integer(a.q))
                    else:
                        num.append(a)
                top = build(num[0]) if len(num) == 1 else node(L.AST_TIMES, *[build(a) for a in num]) if num else build(sp.Integer(1))
                if not den:
                    return top
                bottom = build(den[0]) if len(den) == 1 else node(L.AST_TIMES, *[build(a) for a in den])
                return node(L.AST_DIVIDE, top, bottom)
            if isinstance(e, sp.Pow):
                if e.exp == sp.Rational(1, 2):
                    return node(L.AST_FUNCTION_ROOT, build(e.base))
                if e.exp == -1:
                    return node(L.AST_DIVIDE, build(sp.Integer(1)), build(e.base))
                return node(L.AST_POWER, build(e.base), build(e.exp))
            if isinstance(e, sp.Piecewise):
                n = node(L.AST_FUNCTION_PIECEWISE)
                for value, cond in e.args:
                    if cond is sp.true:
                        n.addChild(build(value))
                        return n
                    n.addChild(build(value))
                    n.addChild(build(cond))
                return n
            if isinstance(e, sp.Heaviside):  # step(x): 0 before, value at 0 as given
                x = e.args[0]
                h0 = e.args[1] if len(e.args) > 1 else sp.Rational(1, 2)
                return build(sp.Piecewise((1, sp.Gt(x, 0)), (h0, sp.Eq(x, 0)), (0, True)))
            relations = {sp.StrictLessThan: L.AST_RELATIONAL_LT, sp.LessThan: L.AST_RELATIONAL_LEQ,
                         sp.StrictGreaterThan: L.AST_RELATIONAL_GT, sp.GreaterThan: L.AST_RELATIONAL_GEQ,
                         sp.Equality: L.AST_RELATIONAL_EQ, sp.Unequality: L.AST_RELATIONAL_NEQ}
            if type(e) in relations:
                return node(relations[type(e)], build(e.lhs), build(e.rhs))
            logic = {sp.And: L.AST_LOGICAL_AND, sp.Or: L.AST_LOGICAL_OR, sp.Not: L.AST_LOGICAL_NOT}
            if type(e) in logic:
                return node(logic[type(e)], *[build(a) for a in e.args])
            functions = {sp.exp: L.AST_FUNCTION_EXP, sp.log: L.AST_FUNCTION_LN, sp.Abs: L.AST_FUNCTION_ABS,
                         sp.sin: L.AST_FUNCTION_SIN, sp.cos: L.AST_FUNCTION_COS, sp.tan: L.AST_FUNCTION_TAN,
                         sp.sinh: L.AST_FUNCTION_SINH, sp.cosh: L.AST_FUNCTION_COSH, sp.tanh: L.AST_FUNCTION_TANH,
                         sp.asin: L.AST_FUNCTION_ARCSIN, sp.acos: L.AST_FUNCTION_ARCCOS, sp.atan: L.AST_FUNCTION_ARCTAN,
                         sp.asinh: L.AST_FUNCTION_ARCSINH, sp.acosh: L.AST_FUNCTION_ARCCOSH,
                         sp.atanh: L.AST_FUNCTION_ARCTANH, sp.floor: L.AST_FUNCTION_FLOOR,
                         sp.ceiling: L.AST_FUNCTION_CEILING, sp.factorial: L.AST_FUNCTION_FACTORIAL,
                         sp.Min: L.AST_FUNCTION_MIN, sp.Max: L.AST_FUNCTION_MAX}
            if type(e) in functions:
                if type(e) is sp.log and len(e.args) == 2:
                    return node(L.AST_DIVIDE, node(L.AST_FUNCTION_LN, build(e.args[0])),
                                node(L.AST_FUNCTION_LN, build(e.args[1])))
                return node(functions[type(e)], *[build(a) for a in e.args])
            raise ModelError(f"writing SBML: cannot express '{e}' ({type(e).__name__}) in MathML")

        return build(expr)

    def math(self, text, *, boolean=False):
        from ..model.expressions import parse_expression

        if boolean:  # the parser reads a condition only inside piecewise
            expr = parse_expression(f"piecewise(1, {text}, 0)", self.symbols).args[0][1]
        else:
            expr = parse_expression(text, self.symbols)
        return self.ast(expr)

    # ------------------------------------------------------------ model
    def export(self) -> str:
        import sympy as sp

        L = self.libsbml
        data = self.data
        m = self.m
        m.setId(_sbml_id(data.get("name") or "model"))
        if data.get("name"):
            m.setName(str(data["name"]))
        pools = data.get("compartments") or {}
        parameters = dict(data.get("parameters") or {})
        assignments = {k: (v["expr"] if isinstance(v, dict) else v) for k, v in (data.get("assignments") or {}).items()}
        rates = {k: (v["expr"] if isinstance(v, dict) else v) for k, v in (data.get("rates") or {}).items()}
        events = data.get("events") or {}
        observables = data.get("observables") or {}
        names = list(pools) + list(parameters) + list(assignments) + list(observables)
        self.symbols = {n: sp.Symbol(n, real=True) for n in names}
        time_unit = self.unit(data.get("time_unit"))
        if time_unit:
            m.setTimeUnits(time_unit)
        targets = {target for e in events.values() for target in (e.get("assign") or {})}

        # SBML species live in compartments: a pool's volume parameter becomes one (its id is
        # the parameter's name, so math naming it still means the volume)
        compartments = {}
        for name, pool in pools.items():
            volume = pool.get("volume")
            if volume is None:
                key = "default_compartment"
                size = 1.0
            elif isinstance(volume, str):
                key, size = volume, None
            else:
                key, size = f"volume_{_number_text(float(volume)).strip('()').replace('.', '_').replace('-', 'm')}", float(volume)
            compartments.setdefault(key, size)
        for cid, size in compartments.items():
            c = m.createCompartment()
            c.setId(cid)
            c.setSpatialDimensions(3)
            c.setConstant(True)
            if size is None:
                entry = parameters.pop(cid, None)
                if entry is None:
                    raise ModelError(f"writing SBML: a pool's volume names '{cid}', which is not a parameter")
                if cid in rates or cid in targets:
                    raise ModelError(f"writing SBML: the volume '{cid}' changes in time; SBML export needs constant volumes")
                self.value(c, cid, entry.get("value"), setter=c.setSize)
                unit = self.unit(entry.get("unit"))
                if unit:
                    c.setUnits(unit)
            else:
                c.setSize(size)

        for name, pool in pools.items():
            s = m.createSpecies()
            s.setId(name)
            volume = pool.get("volume")
            s.setCompartment("default_compartment" if volume is None else volume if isinstance(volume, str) else
                             f"volume_{_number_text(float(volume)).strip('()').replace('.', '_').replace('-', 'm')}")
            s.setHasOnlySubstanceUnits(True)  # names in kinetics math are amounts
            s.setBoundaryCondition(bool(pool.get("boundary", False)))
            s.setConstant(False)
            self.value(s, name, pool.get("initial", 0), setter=s.setInitialAmount)
            unit = self.unit(pool.get("unit"))
            if unit:
                s.setSubstanceUnits(unit)
            if pool.get("description"):
                s.setName(str(pool["description"])[:200])

        for name, entry in parameters.items():
            if not isinstance(entry, dict):
                entry = {"value": entry}
            p = m.createParameter()
            p.setId(name)
            p.setConstant(name not in rates and name not in targets)
            self.value(p, name, entry.get("value"), setter=p.setValue)
            unit = self.unit(entry.get("unit"))
            if unit:
                p.setUnits(unit)
        for name, expr in list(assignments.items()) + [(k, (v["expr"] if isinstance(v, dict) else v)) for k, v in observables.items()]:
            p = m.createParameter()
            p.setId(name)
            p.setConstant(False)
            rule = m.createAssignmentRule()
            rule.setVariable(name)
            rule.setMath(self.math(expr))
        for name, expr in rates.items():
            rule = m.createRateRule()
            rule.setVariable(name)
            rule.setMath(self.math(expr))

        reactions = {}
        for name, flow in (data.get("flows") or {}).items():
            reactions[name] = {"reactants": [flow["from"]] if flow.get("from") else [],
                               "products": [flow["to"]] if flow.get("to") else [], "rate": flow["rate"]}
        reactions.update(data.get("reactions") or {})
        for name, entry in reactions.items():
            r = m.createReaction()
            r.setId(name)
            r.setReversible(True)  # a kinetics rate may change sign
            for side, create in (("reactants", r.createReactant), ("products", r.createProduct)):
                refs = entry.get(side) or {}
                if isinstance(refs, (list, tuple)):
                    counted = {}
                    for species in refs:
                        counted[species] = counted.get(species, 0) + 1
                    refs = counted
                for species, coefficient in refs.items():
                    ref = create()
                    ref.setSpecies(species)
                    ref.setStoichiometry(float(coefficient))
                    ref.setConstant(True)
            law = r.createKineticLaw()
            law.setMath(self.math(str(entry["rate"]) if not isinstance(entry["rate"], str) else entry["rate"]))

        for name, entry in events.items():
            e = m.createEvent()
            e.setId(name)
            e.setUseValuesFromTriggerTime(True)
            trigger = e.createTrigger()
            trigger.setMath(self.math(entry["trigger"], boolean=True))
            trigger.setInitialValue(not entry.get("fire_at_start", False))
            trigger.setPersistent(bool(entry.get("persistent", True)))
            for target, expr in (entry.get("assign") or {}).items():
                ea = e.createEventAssignment()
                ea.setVariable(target)
                ea.setMath(self.math(str(expr)))
        return L.writeSBMLToString(self.doc)

    def value(self, element, name, value, *, setter):
        """A number sets the attribute; an expression becomes an initialAssignment."""
        if isinstance(value, bool):
            raise ModelError(f"writing SBML: '{name}' has the value {value!r}")
        if isinstance(value, (int, float)):
            setter(float(value))
            return
        ia = self.m.createInitialAssignment()
        ia.setSymbol(name)
        ia.setMath(self.math(str(value)))


def _sbml_id(text):
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(text))
    return out if out and not out[0].isdigit() else "m_" + out


def write_sbml(model, path=None) -> str:
    """A kinetics model (a :class:`~kinetics.Model` or a model dict) as SBML Level 3 version 2
    text; written (atomically) to ``path`` if given. Pools are species in amounts
    (``hasOnlySubstanceUnits``), a pool's volume parameter is its compartment, assignments and
    observables are parameters with assignment rules, rates are rate rules and events keep
    their trigger, initial value and persistence; units are written where SBML can state them
    exactly."""
    data = model if isinstance(model, dict) else model.to_dict()
    text = _Exporter(data).export()
    if path is not None:
        from .files import atomic_write
        atomic_write(path, text)
    return text
