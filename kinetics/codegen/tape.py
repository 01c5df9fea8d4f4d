"""Model expressions compiled to data: a straight-line instruction tape.

A :class:`Tape` evaluates a list of sympy expressions of a fixed list of input symbols. It is
plain numpy data (an ``int64`` program and a ``float64`` constant pool), so one compiled
interpreter (:func:`run_tape`, numba, cached on disk) evaluates every model: a new model never
triggers a new numba compilation.

Register file
    ``reg[0:n_inputs]`` holds the inputs, ``reg[n_inputs:n_inputs+n_consts]`` the constants,
    and instruction ``k`` writes ``reg[n_inputs + n_consts + k]``.

Program layout (``Tape.prog``, int64)
    ``prog[0:HEADER]`` is the header (see the ``H_*`` indices), then four int64 per
    instruction ``(opcode, a, b, c)`` with ``a, b, c`` register indices (for ``POWI`` ``b`` is
    the integer exponent itself), then ``n_outputs`` output register indices, then the linear
    section: ``n_linear`` output rows, ``n_linear`` coefficient registers, ``n_linear`` input
    registers. Output ``i`` is ``reg[out[i]] + sum over the linear terms q with row i of
    reg[coef[q]] * reg[input[q]]`` (see :func:`tape_outputs`).

Linear section
    With ``linear`` given to :meth:`Tape.from_exprs`, terms ``c * x_j`` of an output (a sum)
    with ``x_j`` one of those inputs and ``c`` free of varying inputs are taken out of the
    instruction stream into this sparse matrix-vector product (``c`` lands in the fixed
    prologue). Mass-action compartment models are mostly such terms; the product costs a
    fraction of interpreted instructions. It changes the order of the additions, so outputs
    may differ from a direct evaluation in the last bits.

Fixed prologue
    With ``n_varying`` given, inputs ``n_varying:`` are declared fixed across evaluations
    (model parameters). Instructions that depend only on fixed inputs and constants are moved
    to the front (``n_fixed`` of them); a caller that keeps the register file between calls
    runs them once and then only ``run_tape(uprog, reg, n_fixed, n_instr)`` per evaluation.

Semantics (IEEE double; no exceptions are raised inside the kernel)
    - Division by zero, log of a negative number etc. give inf/nan as in numpy.
    - ``Min``/``Max`` propagate nan.
    - ``Heaviside(x, H0)``: 0 for x < 0, 1 for x > 0, ``H0`` at x == 0 (sympy's default
      ``Heaviside(x)`` carries ``H0 = 1/2``; the model language's ``step(x)`` uses 1), nan
      for nan.
    - Relationals, ``And``, ``Or``, ``Not`` give 1.0 / 0.0; a condition is true when nonzero.
    - ``Piecewise`` evaluates every branch and selects (no short-circuit); a Piecewise without a
      final ``True`` branch gives nan where no condition holds (sympy leaves it undefined).
    - ``sign(0) = 0``; ``log(x, b)`` is already ``log(x)/log(b)`` in sympy.

Supported sympy nodes
    numbers (Integer, Rational, Float, pi, E, oo; zoo and nan give nan), symbols among the
    inputs, ``+ - * /``, powers (integer exponents by multiplication, 1/2 and -1/2 by sqrt,
    others by pow), exp, log, sqrt, Abs, sign, Min/Max (n-ary), Heaviside, Piecewise,
    relationals (< <= > >= == !=), And/Or/Not, true/false, sin, cos, tan, sinh, cosh, tanh,
    asin, acos, atan, asinh, acosh, atanh, atan2, floor, ceiling, erf, erfc, factorial (gamma(x + 1))
    and sympy.codegen's log10, log2, exp2,
    expm1, log1p, Sqrt. Anything else raises ``ValueError`` naming the node.

Kernels (numba-compiled, in :mod:`kinetics.numerics.tape_machine`, re-exported here)
    ``run_tape(uprog, reg, k0, k1)`` runs instructions ``k0..k1-1`` on a register file;
    ``tape_outputs(uprog, reg, out)`` gathers the outputs (including the linear section);
    ``eval_tape(prog, consts, inputs, reg, out)`` does a whole evaluation. ``uprog`` is
    :attr:`Tape.uprog`, the program viewed as uint64.

numba is optional: without it, the kernels run as plain Python (slow, but
:meth:`Tape.evaluate` still works).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import sympy as sp

from .lambdify import power_safe_derivatives
from ..numerics.tape_machine import (  # noqa: F401  (the tape layout and kernels, re-exported)
    HEADER, H_FLAGS, H_NCONST, H_NFIXED, H_NIN, H_NINSTR, H_NLIN, H_NOUT, H_NVARYING, H_VERSION,
    N_OPS, OP_ABS, OP_ACOS, OP_ACOSH, OP_ADD, OP_AND, OP_ARITY, OP_ASIN, OP_ASINH, OP_ATAN,
    OP_ATAN2, OP_ATANH, OP_CEIL, OP_COPY, OP_COS, OP_COSH, OP_DIV, OP_EQ, OP_ERF, OP_ERFC, OP_EXP,
    OP_EXP2, OP_EXPM1, OP_FACTORIAL, OP_FLOOR, OP_GE, OP_GT, OP_HEAVISIDE, OP_LE, OP_LOG, OP_LOG10,
    OP_LOG1P, OP_LOG2, OP_LT, OP_MAX, OP_MIN, OP_MUL, OP_MULADD, OP_MULSUB, OP_NAMES, OP_NE,
    OP_NEG, OP_NMULADD, OP_NOT, OP_OR, OP_POW, OP_POWI, OP_SELECT, OP_SIGN, OP_SIN, OP_SINH,
    OP_SQRT, OP_SQUARE, OP_SUB, OP_TAN, OP_TANH, TAPE_VERSION, eval_tape, eval_tape_many, run_tape,
    tape_load, tape_outputs, tape_source_hash)

__all__ = ["Tape", "build_tapes", "jacobian_rows", "run_tape", "tape_outputs", "eval_tape", "eval_tape_many",
           "tape_source_hash"]

# --------------------------------------------------------------------------- compiler

_UNARY_FUNCS = {
    sp.exp: OP_EXP,
    sp.log: OP_LOG,
    sp.Abs: OP_ABS,
    sp.sign: OP_SIGN,
    sp.sin: OP_SIN,
    sp.cos: OP_COS,
    sp.tan: OP_TAN,
    sp.sinh: OP_SINH,
    sp.cosh: OP_COSH,
    sp.tanh: OP_TANH,
    sp.asin: OP_ASIN,
    sp.acos: OP_ACOS,
    sp.atan: OP_ATAN,
    sp.floor: OP_FLOOR,
    sp.ceiling: OP_CEIL,
    sp.erf: OP_ERF,
    sp.erfc: OP_ERFC,
    sp.asinh: OP_ASINH,
    sp.acosh: OP_ACOSH,
    sp.atanh: OP_ATANH,
    sp.factorial: OP_FACTORIAL,
}
try:  # C99-style functions from sympy.codegen, if a caller uses them
    from sympy.codegen import cfunctions as _cf

    _UNARY_FUNCS.update({_cf.log10: OP_LOG10, _cf.log2: OP_LOG2, _cf.exp2: OP_EXP2,
                         _cf.expm1: OP_EXPM1, _cf.log1p: OP_LOG1P, _cf.Sqrt: OP_SQRT})
except ImportError:  # pragma: no cover
    pass

_RELATIONAL = {
    sp.StrictLessThan: OP_LT,
    sp.LessThan: OP_LE,
    sp.StrictGreaterThan: OP_GT,
    sp.GreaterThan: OP_GE,
    sp.Equality: OP_EQ,
    sp.Unequality: OP_NE,
}
_COMMUTATIVE = {OP_ADD, OP_MUL, OP_MIN, OP_MAX, OP_EQ, OP_NE, OP_AND, OP_OR}

# Operand references while building: ("i", k) input, ("c", k) constant, ("t", k) temporary.


class _Builder:
    def __init__(self, inputs):
        self.inputs = {}
        for i, s in enumerate(inputs):
            if not isinstance(s, sp.Symbol):
                raise ValueError(f"tape inputs must be sympy Symbols, got {s!r}")
            if s in self.inputs:
                raise ValueError(f"tape input {s} is listed twice")
            self.inputs[s] = i
        self.consts: list[float] = []
        self.const_ref: dict[str, tuple] = {}
        self.instrs: list[tuple] = []  # (op, a, b, c) with operand refs (b may be an int for POWI)
        self.value_number: dict[tuple, tuple] = {}
        self.memo: dict[sp.Basic, tuple] = {}

    # -- leaves
    def const(self, value) -> tuple:
        v = float(value)
        key = repr(v)
        ref = self.const_ref.get(key)
        if ref is None:
            ref = ("c", len(self.consts))
            self.consts.append(v)
            self.const_ref[key] = ref
        return ref

    def emit(self, op, a, b=None, c=None) -> tuple:
        if op in _COMMUTATIVE and repr(b) < repr(a):
            a, b = b, a
        key = (op, a, b, c)
        ref = self.value_number.get(key)
        if ref is None:
            ref = ("t", len(self.instrs))
            self.instrs.append(key)
            self.value_number[key] = ref
        return ref

    # -- expressions
    def build(self, e) -> tuple:
        ref = self.memo.get(e)
        if ref is None:
            ref = self._build(e)
            self.memo[e] = ref
        return ref

    def _fold(self, op, refs):
        acc = refs[0]
        for r in refs[1:]:
            acc = self.emit(op, acc, r)
        return acc

    def _product(self, factors):
        refs = [self.build(f) for f in factors]
        return self._fold(OP_MUL, refs) if refs else None

    def _build(self, e) -> tuple:
        if isinstance(e, sp.Symbol):
            if e in self.inputs:
                return ("i", self.inputs[e])
            raise ValueError(f"symbol {e} is not among the tape inputs")
        if e is sp.true or isinstance(e, sp.logic.boolalg.BooleanTrue):
            return self.const(1.0)
        if e is sp.false or isinstance(e, sp.logic.boolalg.BooleanFalse):
            return self.const(0.0)
        if e is sp.zoo or e is sp.nan:  # complex infinity (e.g. 1/0): no real value
            return self.const(math.nan)
        if isinstance(e, (sp.Number, sp.NumberSymbol)):
            return self.const(float(e))
        if isinstance(e, sp.Add):
            return self._add(e)
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e)
        func = e.func
        if func in _UNARY_FUNCS:
            if len(e.args) != 1:
                raise ValueError(f"{func.__name__} with {len(e.args)} arguments is not "
                                 "supported in a tape")
            return self.emit(_UNARY_FUNCS[func], self.build(e.args[0]))
        if func in (sp.Min, sp.Max):
            refs = [self.build(a) for a in e.args]
            return self._fold(OP_MIN if func is sp.Min else OP_MAX, refs)
        if func is sp.atan2:
            return self.emit(OP_ATAN2, self.build(e.args[0]), self.build(e.args[1]))
        if func is sp.Heaviside:
            x = self.build(e.args[0])
            h0 = e.args[1] if len(e.args) > 1 else sp.S.Half
            if h0 is None:
                h0 = sp.S.Half
            return self.emit(OP_HEAVISIDE, x, self.build(h0))
        if func in _RELATIONAL:
            return self.emit(_RELATIONAL[func], self.build(e.args[0]), self.build(e.args[1]))
        if func in (sp.And, sp.Or):
            refs = [self.build(a) for a in e.args]
            return self._fold(OP_AND if func is sp.And else OP_OR, refs)
        if func is sp.Not:
            return self.emit(OP_NOT, self.build(e.args[0]))
        if isinstance(e, sp.Piecewise):
            acc = None  # value where no condition holds: nan unless a True branch exists
            for value, cond in reversed(e.args):
                if cond is sp.true:
                    acc = self.build(value)
                elif cond is sp.false:
                    continue
                else:
                    if acc is None:
                        acc = self.const(math.nan)
                    acc = self.emit(OP_SELECT, self.build(cond), self.build(value), acc)
            return acc if acc is not None else self.const(math.nan)
        name = getattr(func, "__name__", type(e).__name__)
        raise ValueError(f"unsupported sympy node {name} in tape expression: {e}")

    def _add(self, e):
        pos, neg = [], []
        for term in e.args:
            coeff, rest = term.as_coeff_Mul()
            if coeff.is_negative and coeff.is_finite:
                neg.append(-coeff * rest if rest is not sp.S.One else -coeff)
            else:
                pos.append(term)
        if pos:
            acc = self._fold(OP_ADD, [self.build(t) for t in pos])
            for t in neg:
                acc = self.emit(OP_SUB, acc, self.build(t))
            return acc
        acc = self._fold(OP_ADD, [self.build(t) for t in neg])
        return self.emit(OP_NEG, acc)

    def _mul(self, e):
        coeff, rest = e.as_coeff_Mul()
        num, den = [], []
        negate = False
        if coeff is not sp.S.One:
            if coeff.is_negative:
                negate = True
                coeff = -coeff
            if isinstance(coeff, sp.Rational) and not isinstance(coeff, sp.Integer):
                if coeff.p != 1:
                    num.append(sp.Integer(coeff.p))
                den.append(sp.Integer(coeff.q))
            elif coeff is not sp.S.One:
                num.append(coeff)
        for f in sp.Mul.make_args(rest):
            if isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative:
                den.append(sp.Pow(f.base, -f.exp))
            else:
                num.append(f)
        n = self._product(num)
        d = self._product(den)
        if d is not None:
            acc = self.emit(OP_DIV, n if n is not None else self.const(1.0), d)
        else:
            acc = n if n is not None else self.const(1.0)
        return self.emit(OP_NEG, acc) if negate else acc

    def _pow(self, e):
        base, ex = e.args
        if ex.is_Number and ex.is_finite:
            fe = float(ex)
            if fe == int(fe) and abs(fe) <= 64:
                n = int(fe)
                if n == 0:
                    return self.const(1.0)
                x = self.build(base)
                if n == 1:
                    return x
                if n == -1:
                    return self.emit(OP_DIV, self.const(1.0), x)
                m = abs(n)
                if m == 2:
                    r = self.emit(OP_SQUARE, x)
                elif m == 3:
                    r = self.emit(OP_MUL, self.emit(OP_SQUARE, x), x)
                elif m == 4:
                    r = self.emit(OP_SQUARE, self.emit(OP_SQUARE, x))
                else:
                    r = self.emit(OP_POWI, x, m)
                return r if n > 0 else self.emit(OP_DIV, self.const(1.0), r)
            if fe == 0.5:
                return self.emit(OP_SQRT, self.build(base))
            if fe == -0.5:
                return self.emit(OP_DIV, self.const(1.0), self.emit(OP_SQRT, self.build(base)))
            if fe == 1.5:
                x = self.build(base)
                return self.emit(OP_MUL, x, self.emit(OP_SQRT, x))
            return self.emit(OP_POW, self.build(base), self.const(fe))
        if base is sp.E:
            return self.emit(OP_EXP, self.build(ex))
        return self.emit(OP_POW, self.build(base), self.build(ex))


def _split_linear(exprs, inputs, n_varying, linear):
    """Split each expression into a remainder and terms ``c * x_j`` (x_j = inputs[j] with j in
    ``linear``, c free of the varying inputs). Returns (remainders, [(row, j, c)])."""
    linear = sorted(set(int(j) for j in linear))
    for j in linear:
        if not 0 <= j < n_varying:
            raise ValueError(f"linear input index {j} is not a varying input (< {n_varying})")
    varying = [inputs[j] for j in range(n_varying)]
    index = {inputs[j]: j for j in linear}
    remainders, terms = [], []
    for row, e in enumerate(exprs):
        coeffs: dict[int, sp.Expr] = {}
        rest = []
        for term in sp.Add.make_args(e):
            c, x = term.as_independent(*varying, as_Add=False)
            j = index.get(x)
            if j is None or c.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
                rest.append(term)
            else:
                coeffs[j] = coeffs.get(j, sp.S.Zero) + c
        remainders.append(sp.Add(*rest))
        for j, c in coeffs.items():
            if c != 0:
                terms.append((row, j, c))
    return remainders, terms


class Tape:
    """A compiled straight-line program evaluating expressions of ``inputs``.

    Attributes: ``prog`` (int64 program, see the module docstring), ``consts`` (float64),
    ``n_inputs``, ``n_outputs``, ``n_instructions``, ``n_fixed``, ``n_varying``,
    ``n_linear`` (terms in the linear section), ``n_registers``, ``uses_input`` (bool array:
    which inputs the outputs depend on).
    """

    __slots__ = ("prog", "uprog", "consts", "n_inputs", "n_outputs", "n_instructions", "n_fixed",
                 "n_varying", "n_linear", "n_registers", "uses_input", "aux")

    def __init__(self, prog: np.ndarray, consts: np.ndarray, uses_input: np.ndarray):
        self.prog = np.ascontiguousarray(prog, dtype=np.int64)
        #: The same program as unsigned integers, the form the kernels take.
        self.uprog = self.prog.view(np.uint64)
        self.consts = np.ascontiguousarray(consts, dtype=np.float64)
        if self.prog[H_VERSION] != TAPE_VERSION:
            raise ValueError(f"tape version {self.prog[H_VERSION]} is not {TAPE_VERSION}")
        self.n_inputs = int(self.prog[H_NIN])
        self.n_outputs = int(self.prog[H_NOUT])
        self.n_instructions = int(self.prog[H_NINSTR])
        self.n_fixed = int(self.prog[H_NFIXED])
        self.n_varying = int(self.prog[H_NVARYING])
        self.n_linear = int(self.prog[H_NLIN])
        self.n_registers = self.n_inputs + int(self.prog[H_NCONST]) + self.n_instructions
        self.uses_input = np.asarray(uses_input, dtype=bool)
        #: Per-tape cache for users of the tape (e.g. the integrator's sparse-LU plan).
        self.aux: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_exprs(cls, exprs, inputs, n_varying: int | None = None,
                   linear=None) -> "Tape":
        """Compile ``exprs`` (sympy expressions of the symbols ``inputs``) to a tape.

        ``n_varying``: the first ``n_varying`` inputs change from one evaluation to the
        next, the rest stay fixed over many evaluations (e.g. model parameters during one
        integration); instructions depending only on fixed inputs form the prologue
        (``n_fixed``). Default: every input varies (no prologue).

        ``linear``: indices of varying inputs whose terms with fixed coefficients go to the
        linear section (see the module docstring). Default: none.

        Raises ``ValueError`` naming an unsupported sympy node or an unknown symbol.
        """
        inputs = list(inputs)
        n_in = len(inputs)
        if n_varying is None:
            n_varying = n_in
        if not 0 <= n_varying <= n_in:
            raise ValueError(f"n_varying={n_varying} must lie in [0, {n_in}]")
        exprs = [sp.sympify(e) for e in exprs]
        lin_terms: list[tuple[int, int, sp.Expr]] = []
        if linear:
            exprs, lin_terms = _split_linear(exprs, inputs, n_varying, linear)
        n_user = len(exprs)
        exprs = exprs + [c for _, _, c in lin_terms]
        b = _Builder(inputs)
        # Trivial outputs (numbers, inputs) bypass CSE; that keeps big sparse Jacobians cheap.
        nontrivial = [i for i, e in enumerate(exprs) if not (e.is_Number or e.is_Symbol
                                                             or isinstance(e, sp.NumberSymbol))]
        out_refs: list = [None] * len(exprs)
        if nontrivial:
            dummies = (sp.Dummy(f"cse{i}") for i in itertools.count())
            replacements, reduced = sp.cse([exprs[i] for i in nontrivial], symbols=dummies,
                                           order="none")
            for sym, sub in replacements:
                b.memo[sym] = b.build(sub)
            for i, r in zip(nontrivial, reduced):
                out_refs[i] = b.build(r)
        for i, e in enumerate(exprs):
            if out_refs[i] is None:
                out_refs[i] = b.build(e)
        lin = [(row, j, out_refs[n_user + q]) for q, (row, j, _) in enumerate(lin_terms)]
        return cls._assemble(b, out_refs[:n_user], n_in, n_varying, lin)

    @classmethod
    def _assemble(cls, b: _Builder, out_refs, n_in, n_varying, lin=()) -> "Tape":
        instrs = list(b.instrs)
        all_refs = list(out_refs) + [c for _, _, c in lin]

        def refs_of(ins):
            return [r for r in ins[1:1 + OP_ARITY[ins[0]]]]

        def is_temp(r):
            return isinstance(r, tuple) and r[0] == "t"

        # Liveness: keep only instructions reachable from the outputs.
        def liveness():
            live = [False] * len(instrs)
            stack = [r[1] for r in all_refs if r[0] == "t"]
            while stack:
                k = stack.pop()
                if live[k]:
                    continue
                live[k] = True
                for r in refs_of(instrs[k]):
                    if is_temp(r) and not live[r[1]]:
                        stack.append(r[1])
            return live

        live = liveness()
        # Which instructions vary (depend on an input < n_varying)?  Builder order is
        # topological, so one forward pass suffices.
        varying = [False] * len(instrs)
        for k, ins in enumerate(instrs):
            varying[k] = any((r[0] == "i" and r[1] < n_varying) or (is_temp(r) and varying[r[1]])
                             for r in refs_of(ins))
        # Fuse a single-use MUL into the ADD/SUB that consumes it (fewer dispatches; the
        # arithmetic and its rounding are unchanged).
        uses = [0] * len(instrs)
        for k, ins in enumerate(instrs):
            if live[k]:
                for r in refs_of(ins):
                    if is_temp(r):
                        uses[r[1]] += 1
        for r in all_refs:
            if is_temp(r):
                uses[r[1]] += 1

        def fusable(r, k):
            return (is_temp(r) and instrs[r[1]][0] == OP_MUL and uses[r[1]] == 1
                    and varying[r[1]] == varying[k])

        for k, ins in enumerate(instrs):
            if not live[k] or ins[0] not in (OP_ADD, OP_SUB):
                continue
            op, x, y, _ = ins
            if op == OP_ADD and fusable(y, k):
                m = instrs[y[1]]
                instrs[k] = (OP_MULADD, m[1], m[2], x)
                live[y[1]] = False
            elif op == OP_ADD and fusable(x, k):
                m = instrs[x[1]]
                instrs[k] = (OP_MULADD, m[1], m[2], y)
                live[x[1]] = False
            elif op == OP_SUB and fusable(y, k):
                m = instrs[y[1]]
                instrs[k] = (OP_NMULADD, m[1], m[2], x)
                live[y[1]] = False
            elif op == OP_SUB and fusable(x, k):
                m = instrs[x[1]]
                instrs[k] = (OP_MULSUB, m[1], m[2], y)
                live[x[1]] = False

        order = [k for k in range(len(instrs)) if live[k] and not varying[k]]
        n_fixed = len(order)
        order += [k for k in range(len(instrs)) if live[k] and varying[k]]
        n_const = len(b.consts)
        new_index = {k: i for i, k in enumerate(order)}

        def reg(r):
            kind, i = r
            if kind == "i":
                return i
            if kind == "c":
                return n_in + i
            return n_in + n_const + new_index[i]

        n_instr = len(order)
        n_out = len(out_refs)
        n_lin = len(lin)
        prog = np.zeros(HEADER + 4 * n_instr + n_out + 3 * n_lin, dtype=np.int64)
        prog[H_VERSION] = TAPE_VERSION
        prog[H_NIN] = n_in
        prog[H_NCONST] = n_const
        prog[H_NINSTR] = n_instr
        prog[H_NFIXED] = n_fixed
        prog[H_NOUT] = n_out
        prog[H_NVARYING] = n_varying
        prog[H_NLIN] = n_lin
        uses_in = np.zeros(n_in, dtype=bool)
        for j, k in enumerate(order):
            ins = instrs[k]
            p = HEADER + 4 * j
            prog[p] = ins[0]
            for q, r in enumerate(refs_of(ins)):
                prog[p + 1 + q] = reg(r)
                if r[0] == "i":
                    uses_in[r[1]] = True
            if ins[0] == OP_POWI:
                prog[p + 2] = ins[2]
        o = HEADER + 4 * n_instr
        for i, r in enumerate(out_refs):
            prog[o + i] = reg(r)
            if r[0] == "i":
                uses_in[r[1]] = True
        lo = o + n_out
        for q, (row, j, c) in enumerate(lin):
            prog[lo + q] = row
            prog[lo + n_lin + q] = reg(c)
            prog[lo + 2 * n_lin + q] = j
            uses_in[j] = True
            if c[0] == "i":
                uses_in[c[1]] = True
        flags = 0
        for i in range(min(n_in, 62)):
            if uses_in[i]:
                flags |= 1 << i
        prog[H_FLAGS] = flags
        return cls(prog, np.asarray(b.consts, dtype=np.float64), uses_in)

    # ------------------------------------------------------------------ evaluation
    @property
    def out_index(self) -> np.ndarray:
        """Register index of each output."""
        o = HEADER + 4 * self.n_instructions
        return self.prog[o:o + self.n_outputs]

    @property
    def code(self) -> np.ndarray:
        """The instructions as an ``(n_instructions, 4)`` view ``(op, a, b, c)``."""
        return self.prog[HEADER:HEADER + 4 * self.n_instructions].reshape(-1, 4)

    def evaluate(self, inputs) -> np.ndarray:
        """Outputs for one input vector (1-D), or one row of outputs per row of a 2-D array."""
        x = np.ascontiguousarray(inputs, dtype=np.float64)
        if x.ndim == 2:
            if x.shape[1] != self.n_inputs:
                raise ValueError(f"expected {self.n_inputs} inputs per row, got {x.shape[1]}")
            out = np.empty((x.shape[0], self.n_outputs))
            eval_tape_many(self.prog, self.consts, x, out)
            return out
        if x.shape != (self.n_inputs,):
            raise ValueError(f"expected {self.n_inputs} inputs, got shape {x.shape}")
        out = np.empty(self.n_outputs)
        eval_tape(self.prog, self.consts, x, np.empty(self.n_registers), out)
        return out

    def depends_on(self, index: int) -> bool:
        """Whether some output depends on input ``index``."""
        return bool(self.uses_input[index])

    def describe(self) -> str:
        """A readable listing of the program (for debugging)."""
        n_in, n_c = self.n_inputs, len(self.consts)

        def name(r):
            if r < n_in:
                return f"in{r}"
            if r < n_in + n_c:
                return repr(float(self.consts[r - n_in]))
            return f"r{r - n_in - n_c}"

        lines = []
        for k, (op, a, b_, c) in enumerate(self.code):
            args = [name(r) for r in (a, b_, c)[:OP_ARITY[int(op)]]]
            if op == OP_POWI:
                args.append(str(b_))
            mark = "  (fixed)" if k < self.n_fixed else ""
            lines.append(f"r{k} = {OP_NAMES[int(op)]}({', '.join(args)}){mark}")
        lines.append("out = [" + ", ".join(name(int(r)) for r in self.out_index) + "]")
        lo = HEADER + 4 * self.n_instructions + self.n_outputs
        nl = self.n_linear
        for q in range(nl):
            row, c, j = self.prog[lo + q], self.prog[lo + nl + q], self.prog[lo + 2 * nl + q]
            lines.append(f"out[{row}] += {name(int(c))} * in{j}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Tape(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
                f"n_instructions={self.n_instructions}, n_fixed={self.n_fixed})")

    def __getstate__(self):
        return {"prog": self.prog, "consts": self.consts, "uses_input": self.uses_input}

    def __setstate__(self, state):
        self.__init__(state["prog"], state["consts"], state["uses_input"])


# --------------------------------------------------------------------------- integrator tapes


def jacobian_rows(exprs, wrt, symbols):
    """d expr / d w for each expr (rows) and w in ``wrt`` (columns), for real arguments:
    non-real symbols are differentiated as real ones (so ``Abs``' derivative is ``sign``),
    and the derivatives of step functions (``DiracDelta``, ``floor``, ``ceiling``) are taken
    as 0, their value almost everywhere; powers ``a**b`` as ``b * a**(b - 1) * a'`` (finite
    where a = 0 and b >= 1, see :func:`kinetics.codegen.lambdify.power_safe_derivatives`)."""
    to_real = {s: sp.Dummy(s.name, real=True) for s in symbols if not s.is_real}
    back = {v: k for k, v in to_real.items()}
    exprs_r = [e.xreplace(to_real) for e in exprs]
    wrt_r = [to_real.get(w, w) for w in wrt]

    def clean(d):
        if d.has(sp.DiracDelta):
            d = d.replace(sp.DiracDelta, lambda *args: sp.S.Zero)
        if d.has(sp.Derivative):
            # floor(u(x)) differentiates to Subs(Derivative(floor(xi), xi), xi, u) * u'(x)
            steps = {e: sp.S.Zero for e in d.atoms(sp.Subs, sp.Derivative)
                     if isinstance(getattr(e, "expr", None), (sp.floor, sp.ceiling))
                     or (isinstance(e, sp.Subs) and isinstance(e.expr, sp.Derivative)
                         and isinstance(e.expr.expr, (sp.floor, sp.ceiling)))}
            d = d.xreplace(steps)
        return d.xreplace(back)

    return [[clean(d) for d in row] for row in power_safe_derivatives(exprs_r, wrt_r)]


def sensitivity_tapes(f, J, FpD, t, x, S, params, guarded=None, singular_as_zero=None):
    """Tapes of the state-and-sensitivities system x' = f, S' = J S + F_p D in the parts from
    which the compiled integrator forms it (``integrate(..., products=plan)``, see
    :func:`kinetics.numerics.rosenbrock.product_plan`), instead of tapes of the whole augmented
    system: an instruction per product J_ij S_jk in its right-hand side, and its Jacobian
    differentiated in all n (1 + K) values (for 20 states and 40 directions, 800 expressions
    differentiated in 820 symbols).

    ``f`` (n), ``J`` = df/dx (n x n), ``FpD`` (n x K), ``x`` the n states, ``S`` the n*K
    sensitivity symbols (row-major: state i, direction k at i*K + k), ``params`` the other
    inputs. ``guarded(e)``: whether a product e * S_jk counts as 0 where S_jk = 0 (an entry
    infinite there: a fractional power of an empty pool); ``singular_as_zero(e)``: e as it
    enters the iteration matrix (infinite powers taken as 0). Returns (rhs, jac, dfdt, plan):
    the tapes (inputs ``[t, *x, *S, *params]``; dfdt of the augmented system, None when
    nothing reads t) and the plan."""
    from ..numerics.rosenbrock import product_plan, state_block_lu_plan
    guarded = guarded or (lambda e: False)
    singular_as_zero = singular_as_zero or (lambda e: e)
    f = [sp.sympify(e) for e in f]
    x, S = list(x), list(S)
    n, K = len(x), FpD.shape[1]
    inputs = [t, *x, *S, *params]
    n_varying = 1 + n + len(S)
    j_entries = [(i, j) for i in range(n) for j in range(n) if J[i, j] != 0]
    g_entries = [(i, k) for i in range(n) for k in range(K) if FpD[i, k] != 0]
    j_values = [J[i, j] for i, j in j_entries]
    g_values = [FpD[i, k] for i, k in g_entries]
    rhs = Tape.from_exprs([*f, *j_values, *g_values], inputs, n_varying=n_varying, linear=range(1, 1 + n))
    # the coupling C = d(J S + F_p D)/dx from dJ_ij/dx_l and d(F_p D)_ik/dx_l
    h_entries, h_values = [], []
    for (i, j), row in zip(j_entries, jacobian_rows(j_values, x, inputs)):
        for l, d in enumerate(row):
            if d != 0:
                h_entries.append((i, j, l, bool(guarded(d))))
                h_values.append(singular_as_zero(d))
    dg_entries, dg_values = [], []
    for (i, k), row in zip(g_entries, jacobian_rows(g_values, x, inputs)):
        for l, d in enumerate(row):
            if d != 0:
                dg_entries.append((i, k, l))
                dg_values.append(singular_as_zero(d))
    block = [singular_as_zero(J[i, j]) for i in range(n) for j in range(n)]
    jac = Tape.from_exprs([*block, *h_values, *dg_values], inputs, n_varying=n_varying)
    dfdt = None
    if rhs.uses_input[0]:
        dS = [sum((sp.Piecewise((sp.S.Zero, sp.Eq(S[j * K + k], 0)), (J[i, j] * S[j * K + k], True))
                   if guarded(J[i, j]) else J[i, j] * S[j * K + k] for j in range(n) if J[i, j] != 0), sp.S.Zero)
              + FpD[i, k] for i in range(n) for k in range(K)]
        dfdt = Tape.from_exprs([row[0] for row in jacobian_rows([*f, *dS], [t], inputs)], inputs,
                               n_varying=n_varying)
    plan = product_plan([(i, j, guarded(J[i, j])) for i, j in j_entries], g_entries, h_entries,
                        [(i, k, l) for i, k, l in dg_entries])
    state_block_lu_plan(jac, n)    # the integrator's sparse LU of the state's block, cached on the tape
    return rhs, jac, dfdt, plan


def build_tapes(rhs_exprs, t, states, params, jacobian=None):
    """Tapes for :func:`kinetics.numerics.rosenbrock.integrate` from sympy right-hand sides.

    Returns ``(rhs, jac, dfdt)``: ``jac`` by symbolic differentiation (derivatives of step
    functions taken as 0) unless ``jacobian`` gives its rows (d rhs_i / d state_j);
    ``dfdt`` a tape of ``df/dt`` if some right-hand side contains ``t``, else None. The
    tapes' inputs are ``[t, *states, *params]`` with the parameters marked fixed
    (subexpressions of parameters only are evaluated once per integration).
    """
    rhs_exprs = [sp.sympify(e) for e in rhs_exprs]
    states = list(states)
    params = list(params)
    if len(rhs_exprs) != len(states):
        raise ValueError(f"{len(rhs_exprs)} right-hand sides for {len(states)} states")
    inputs = [t, *states, *params]
    nv = 1 + len(states)
    rhs = Tape.from_exprs(rhs_exprs, inputs, n_varying=nv, linear=range(1, nv))
    jac_rows = jacobian_rows(rhs_exprs, states, inputs) if jacobian is None else jacobian
    jac = Tape.from_exprs([d for row in jac_rows for d in row], inputs, n_varying=nv)
    dfdt = None
    if any(f.has(t) for f in rhs_exprs):
        dfdt_exprs = [row[0] for row in jacobian_rows(rhs_exprs, [t], inputs)]
        dfdt = Tape.from_exprs(dfdt_exprs, inputs, n_varying=nv)
    from ..numerics.rosenbrock import lu_plan     # the integrator's sparse LU plan, cached on the tape
    lu_plan(jac, len(states))
    return rhs, jac, dfdt
