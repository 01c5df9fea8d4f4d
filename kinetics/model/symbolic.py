"""The lowered form of a model that every numerical stage consumes: :class:`SymbolicSystem`.

A :class:`~kinetics.model.Model` (pools, parameters, flows, reactions, assignments, rate rules,
events, observables) is lowered once by :meth:`Model.symbolic` to plain sympy:

* the **state** x: the pools (amounts), then the parameters that have a rate rule;
* the **parameter vector** p: every other parameter, in declaration order; those whose value is
  an expression (an initial assignment) are recomputed from the others at the start of every
  simulation (:attr:`SymbolicSystem.parameter_expressions`);
* dx/dt = N v(x, p, t): stoichiometry times reaction rates (flows are 1-to-1 reactions,
  boundary pools are not changed by reactions), plus the rate rules;
* assignments substituted everywhere (rates, observables, triggers, event assignments), so
  that affine detection sees the network itself;
* events as (trigger, assignments) over x, p and t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .expressions import TIME

__all__ = ["SymbolicSystem", "SymbolicReaction", "SymbolicEvent"]


@dataclass(frozen=True)
class SymbolicReaction:
    """A reaction (or flow) lowered: its rate (assignments substituted) and stoichiometry."""
    name: str
    rate: sp.Expr
    reactants: dict[str, float]
    products: dict[str, float]

    @property
    def net(self) -> dict[str, float]:
        """Net change of each pool per unit of reaction (products minus reactants)."""
        out: dict[str, float] = {}
        for name, s in self.reactants.items():
            out[name] = out.get(name, 0) - s
        for name, s in self.products.items():
            out[name] = out.get(name, 0) + s
        return out

    def route(self) -> str:
        """'A + 2 B -> C' (for reports)."""
        def side(d):
            return " + ".join((f"{s:g} {n}" if s != 1 else n) for n, s in d.items()) or "(outside)"
        return f"{side(self.reactants)} -> {side(self.products)}"


@dataclass(frozen=True)
class SymbolicEvent:
    """An event fired when ``trigger`` turns from false to true (see DESIGN.md "The general
    form"): ``assign`` maps a state or parameter name to an expression of x, p and t whose
    value just before the firing becomes the target's new value."""
    name: str
    trigger: sp.Basic
    assign: dict[str, sp.Expr]
    fire_at_start: bool = False
    persistent: bool = True


@dataclass(frozen=True)
class SymbolicSystem:
    """A model lowered to sympy (see the module docstring). Built by :meth:`Model.symbolic`."""
    states: list[sp.Symbol]
    parameters: list[sp.Symbol]
    rhs: list[sp.Expr]
    initial: list[sp.Expr]
    observables: dict[str, sp.Expr]
    reactions: dict[str, SymbolicReaction]
    assignments: dict[str, sp.Expr] = field(default_factory=dict)
    parameter_expressions: dict[str, sp.Expr] = field(default_factory=dict)
    events: list[SymbolicEvent] = field(default_factory=list)
    n_pools: int = 0
    boundary: frozenset = frozenset()
    volumes: dict[str, sp.Expr] = field(default_factory=dict)
    symbols: dict[str, sp.Symbol] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    time: sp.Symbol = TIME

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.states]

    @property
    def parameter_names(self) -> list[str]:
        return [s.name for s in self.parameters]

    @property
    def pool_names(self) -> list[str]:
        return self.state_names[: self.n_pools]

    @property
    def rate_rule_names(self) -> list[str]:
        """Parameters that move in time (rate rules): the states after the pools."""
        return self.state_names[self.n_pools:]

    @property
    def rates(self) -> dict[str, sp.Expr]:
        """Reaction (and flow) rates by name, assignments substituted."""
        return {name: r.rate for name, r in self.reactions.items()}

    def __getitem__(self, key):
        # older code (and branches written against it) read the lowered model as a dict
        return self.legacy_dict()[key]

    def legacy_dict(self) -> dict:
        """The dict form older code reads (``states``, ``parameters``, ``rhs``, ``rates``, ...)."""
        return {"states": self.states, "parameters": self.parameters, "rhs": self.rhs, "rates": self.rates,
                "observables": self.observables, "initial": self.initial, "symbols": self.symbols,
                "warnings": self.warnings}
