"""The tape machine: the numba interpreter of instruction tapes, and the tape layout.

A tape (:class:`kinetics.codegen.tape.Tape`, built from sympy expressions by
:mod:`kinetics.codegen.tape`) is plain numpy data: an ``int64`` program and a ``float64``
constant pool. This module is everything that runs one, with no knowledge of sympy or models:
the layout (header fields ``H_*``, opcodes ``OP_*``; described in :mod:`kinetics.codegen.tape`)
and the compiled kernels:

``run_tape(uprog, reg, k0, k1)`` runs instructions ``k0..k1-1`` on a register file;
``tape_outputs(uprog, reg, out)`` gathers the outputs (including the linear section);
``eval_tape(prog, consts, inputs, reg, out)`` does a whole evaluation. ``uprog`` is the program
viewed as uint64. Compiled code elsewhere (the Rosenbrock integrator) calls these kernels.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from .jit import jit

__all__ = ["run_tape", "run_tape_lanes", "op_value", "tape_load", "tape_outputs", "tape_outputs_lanes", "eval_tape",
           "eval_tape_many", "tape_source_hash",
           "TAPE_VERSION", "HEADER", "N_OPS", "OP_ARITY", "OP_NAMES"]

#: Bump when the program layout changes.
TAPE_VERSION = 2

# Header fields of ``prog``.
H_VERSION = 0
H_NIN = 1
H_NCONST = 2
H_NINSTR = 3
H_NFIXED = 4
H_NOUT = 5
H_NVARYING = 6
H_FLAGS = 7
H_NLIN = 8
HEADER = 10
#: ``prog[H_FLAGS]`` bit: input ``i`` (i < 62) is read by some instruction or output.
# (bits 0..61 record inputs 0..61; inputs beyond 61 are not tracked in the flags.)

_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U_HEADER = np.uint64(HEADER)

# Opcodes, most frequent first (the interpreter tests them in this order).
OP_MUL = 0
OP_ADD = 1
OP_SUB = 2
OP_MULADD = 3    # reg[a] * reg[b] + reg[c]   (two roundings, as the unfused pair)
OP_NMULADD = 4   # reg[c] - reg[a] * reg[b]
OP_MULSUB = 5    # reg[a] * reg[b] - reg[c]
OP_DIV = 6
OP_NEG = 7
OP_SQUARE = 8
OP_POWI = 9      # reg[a] ** b with the integer b stored in the instruction
OP_POW = 10
OP_SQRT = 11
OP_EXP = 12
OP_LOG = 13
OP_MIN = 14
OP_MAX = 15
OP_ABS = 16
OP_SELECT = 17   # reg[a] != 0 ? reg[b] : reg[c]
OP_LT = 18
OP_LE = 19
OP_GT = 20
OP_GE = 21
OP_EQ = 22
OP_NE = 23
OP_AND = 24
OP_OR = 25
OP_NOT = 26
OP_HEAVISIDE = 27  # x = reg[a], value at 0 = reg[b]
OP_SIGN = 28
OP_SIN = 29
OP_COS = 30
OP_TAN = 31
OP_SINH = 32
OP_COSH = 33
OP_TANH = 34
OP_ASIN = 35
OP_ACOS = 36
OP_ATAN = 37
OP_ATAN2 = 38
OP_FLOOR = 39
OP_CEIL = 40
OP_LOG10 = 41
OP_LOG2 = 42
OP_EXP2 = 43
OP_EXPM1 = 44
OP_LOG1P = 45
OP_ERF = 46
OP_ERFC = 47
OP_COPY = 48
OP_ASINH = 49
OP_ACOSH = 50
OP_ATANH = 51
OP_FACTORIAL = 52  # gamma(x + 1), factorial of a real number
N_OPS = 53

#: Number of register operands per opcode (POWI reads one register; its b is a literal).
OP_ARITY = {OP_MULADD: 3, OP_NMULADD: 3, OP_MULSUB: 3, OP_SELECT: 3, OP_POWI: 1}
for _op in (OP_MUL, OP_ADD, OP_SUB, OP_DIV, OP_POW, OP_MIN, OP_MAX, OP_LT, OP_LE, OP_GT, OP_GE,
            OP_EQ, OP_NE, OP_AND, OP_OR, OP_HEAVISIDE, OP_ATAN2):
    OP_ARITY[_op] = 2
for _op in range(N_OPS):
    OP_ARITY.setdefault(_op, 1)

OP_NAMES = {v: k[3:] for k, v in list(globals().items())
            if k.startswith("OP_") and isinstance(v, int)}


# --------------------------------------------------------------------------- kernels


@jit
def run_tape(up, reg, k0, k1):
    """Execute instructions ``k0 <= k < k1`` of a program on the register file ``reg``.

    ``up`` is the program viewed as unsigned integers (``prog.view(np.uint64)``, see
    :attr:`Tape.uprog`): numba then skips its negative-index wrap-around code, which is
    about 40 % of the machine instructions of this loop."""
    base = up[H_NIN] + up[H_NCONST]
    for k in range(k0, k1):
        uk = np.uint64(k)
        p = _U_HEADER + _U4 * uk
        op = np.int64(up[p])
        a = up[p + _U1]
        b = up[p + _U2]
        if op == OP_MUL:
            v = reg[a] * reg[b]
        elif op == OP_ADD:
            v = reg[a] + reg[b]
        elif op == OP_SUB:
            v = reg[a] - reg[b]
        elif op == OP_MULADD:
            v = reg[a] * reg[b] + reg[up[p + _U3]]
        elif op == OP_NMULADD:
            v = reg[up[p + _U3]] - reg[a] * reg[b]
        elif op == OP_MULSUB:
            v = reg[a] * reg[b] - reg[up[p + _U3]]
        elif op == OP_DIV:
            v = reg[a] / reg[b]
        elif op == OP_NEG:
            v = -reg[a]
        elif op == OP_SQUARE:
            x = reg[a]
            v = x * x
        elif op == OP_POWI:
            x = reg[a]
            e = np.int64(up[p + _U2])  # the exponent itself, signed
            n = e if e >= 0 else -e
            r = 1.0
            while n > 0:
                if n & 1:
                    r *= x
                x *= x
                n >>= 1
            v = r if e >= 0 else 1.0 / r
        elif op == OP_POW:
            v = reg[a] ** reg[b]
        elif op == OP_SQRT:
            v = math.sqrt(reg[a])
        elif op == OP_EXP:
            v = math.exp(reg[a])
        elif op == OP_LOG:
            x = reg[a]
            if x > 0.0:
                v = math.log(x)
            elif x == 0.0:
                v = -math.inf
            else:
                v = math.nan
        elif op == OP_MIN:
            x = reg[a]
            y = reg[b]
            if x != x or y != y:
                v = math.nan
            else:
                v = x if x <= y else y
        elif op == OP_MAX:
            x = reg[a]
            y = reg[b]
            if x != x or y != y:
                v = math.nan
            else:
                v = x if x >= y else y
        elif op == OP_ABS:
            v = abs(reg[a])
        elif op == OP_SELECT:
            v = reg[b] if reg[a] != 0.0 else reg[up[p + _U3]]
        elif op == OP_LT:
            v = 1.0 if reg[a] < reg[b] else 0.0
        elif op == OP_LE:
            v = 1.0 if reg[a] <= reg[b] else 0.0
        elif op == OP_GT:
            v = 1.0 if reg[a] > reg[b] else 0.0
        elif op == OP_GE:
            v = 1.0 if reg[a] >= reg[b] else 0.0
        elif op == OP_EQ:
            v = 1.0 if reg[a] == reg[b] else 0.0
        elif op == OP_NE:
            v = 1.0 if reg[a] != reg[b] else 0.0
        elif op == OP_AND:
            v = 1.0 if (reg[a] != 0.0 and reg[b] != 0.0) else 0.0
        elif op == OP_OR:
            v = 1.0 if (reg[a] != 0.0 or reg[b] != 0.0) else 0.0
        elif op == OP_NOT:
            v = 1.0 if reg[a] == 0.0 else 0.0
        elif op == OP_HEAVISIDE:
            x = reg[a]
            if x < 0.0:
                v = 0.0
            elif x > 0.0:
                v = 1.0
            elif x == 0.0:
                v = reg[b]
            else:
                v = math.nan
        elif op == OP_SIGN:
            x = reg[a]
            if x > 0.0:
                v = 1.0
            elif x < 0.0:
                v = -1.0
            elif x == 0.0:
                v = 0.0
            else:
                v = math.nan
        elif op == OP_SIN:
            v = math.sin(reg[a])
        elif op == OP_COS:
            v = math.cos(reg[a])
        elif op == OP_TAN:
            v = math.tan(reg[a])
        elif op == OP_SINH:
            v = math.sinh(reg[a])
        elif op == OP_COSH:
            v = math.cosh(reg[a])
        elif op == OP_TANH:
            v = math.tanh(reg[a])
        elif op == OP_ASIN:
            x = reg[a]
            v = math.asin(x) if -1.0 <= x <= 1.0 else math.nan
        elif op == OP_ACOS:
            x = reg[a]
            v = math.acos(x) if -1.0 <= x <= 1.0 else math.nan
        elif op == OP_ATAN:
            v = math.atan(reg[a])
        elif op == OP_ATAN2:
            v = math.atan2(reg[a], reg[b])
        elif op == OP_FLOOR:
            x = reg[a]
            v = math.floor(x) if math.isfinite(x) else x
        elif op == OP_CEIL:
            x = reg[a]
            v = math.ceil(x) if math.isfinite(x) else x
        elif op == OP_LOG10:
            x = reg[a]
            if x > 0.0:
                v = math.log10(x)
            elif x == 0.0:
                v = -math.inf
            else:
                v = math.nan
        elif op == OP_LOG2:
            x = reg[a]
            if x > 0.0:
                v = math.log2(x)
            elif x == 0.0:
                v = -math.inf
            else:
                v = math.nan
        elif op == OP_EXP2:
            v = 2.0 ** reg[a]
        elif op == OP_EXPM1:
            v = math.expm1(reg[a])
        elif op == OP_LOG1P:
            x = reg[a]
            if x > -1.0:
                v = math.log1p(x)
            elif x == -1.0:
                v = -math.inf
            else:
                v = math.nan
        elif op == OP_ERF:
            v = math.erf(reg[a])
        elif op == OP_ERFC:
            v = math.erfc(reg[a])
        elif op == OP_COPY:
            v = reg[a]
        elif op == OP_ASINH:
            v = math.asinh(reg[a])
        elif op == OP_ACOSH:
            x = reg[a]
            v = math.acosh(x) if x >= 1.0 else math.nan
        elif op == OP_FACTORIAL:
            x = reg[a] + 1.0
            if x > 0.0 or (x < 0.0 and x != math.floor(x)):
                v = math.gamma(x) if x < 171.7 else math.inf
            else:
                v = math.nan
        elif op == OP_ATANH:
            x = reg[a]
            if -1.0 < x < 1.0:
                v = math.atanh(x)
            elif x == 1.0:
                v = math.inf
            elif x == -1.0:
                v = -math.inf
            else:
                v = math.nan
        else:
            v = math.nan
        reg[base + uk] = v


@jit
def op_value(op, x, y, z):
    """The value of instruction ``op`` (not one of the arithmetic opcodes MUL..POWI, which
    the interpreters inline) on its operand values ``x``, ``y``, ``z`` (those it does not
    read are ignored), for :func:`run_tape_lanes`. The same semantics as :func:`run_tape`'s
    branches, written twice: run_tape keeps every opcode inline, because a call in its loop
    (even on a branch the arithmetic models never take) slowed a single simulation by ~5 %;
    ``tests/test_tape_machine.py`` checks that both give the same value for every opcode."""
    if op == OP_POW:
        v = x ** y
    elif op == OP_SQRT:
        v = math.sqrt(x)
    elif op == OP_EXP:
        v = math.exp(x)
    elif op == OP_LOG:
        if x > 0.0:
            v = math.log(x)
        elif x == 0.0:
            v = -math.inf
        else:
            v = math.nan
    elif op == OP_MIN:
        if x != x or y != y:
            v = math.nan
        else:
            v = x if x <= y else y
    elif op == OP_MAX:
        if x != x or y != y:
            v = math.nan
        else:
            v = x if x >= y else y
    elif op == OP_ABS:
        v = abs(x)
    elif op == OP_SELECT:
        v = y if x != 0.0 else z
    elif op == OP_LT:
        v = 1.0 if x < y else 0.0
    elif op == OP_LE:
        v = 1.0 if x <= y else 0.0
    elif op == OP_GT:
        v = 1.0 if x > y else 0.0
    elif op == OP_GE:
        v = 1.0 if x >= y else 0.0
    elif op == OP_EQ:
        v = 1.0 if x == y else 0.0
    elif op == OP_NE:
        v = 1.0 if x != y else 0.0
    elif op == OP_AND:
        v = 1.0 if (x != 0.0 and y != 0.0) else 0.0
    elif op == OP_OR:
        v = 1.0 if (x != 0.0 or y != 0.0) else 0.0
    elif op == OP_NOT:
        v = 1.0 if x == 0.0 else 0.0
    elif op == OP_HEAVISIDE:
        if x < 0.0:
            v = 0.0
        elif x > 0.0:
            v = 1.0
        elif x == 0.0:
            v = y
        else:
            v = math.nan
    elif op == OP_SIGN:
        if x > 0.0:
            v = 1.0
        elif x < 0.0:
            v = -1.0
        elif x == 0.0:
            v = 0.0
        else:
            v = math.nan
    elif op == OP_SIN:
        v = math.sin(x)
    elif op == OP_COS:
        v = math.cos(x)
    elif op == OP_TAN:
        v = math.tan(x)
    elif op == OP_SINH:
        v = math.sinh(x)
    elif op == OP_COSH:
        v = math.cosh(x)
    elif op == OP_TANH:
        v = math.tanh(x)
    elif op == OP_ASIN:
        v = math.asin(x) if -1.0 <= x <= 1.0 else math.nan
    elif op == OP_ACOS:
        v = math.acos(x) if -1.0 <= x <= 1.0 else math.nan
    elif op == OP_ATAN:
        v = math.atan(x)
    elif op == OP_ATAN2:
        v = math.atan2(x, y)
    elif op == OP_FLOOR:
        v = math.floor(x) if math.isfinite(x) else x
    elif op == OP_CEIL:
        v = math.ceil(x) if math.isfinite(x) else x
    elif op == OP_LOG10:
        if x > 0.0:
            v = math.log10(x)
        elif x == 0.0:
            v = -math.inf
        else:
            v = math.nan
    elif op == OP_LOG2:
        if x > 0.0:
            v = math.log2(x)
        elif x == 0.0:
            v = -math.inf
        else:
            v = math.nan
    elif op == OP_EXP2:
        v = 2.0 ** x
    elif op == OP_EXPM1:
        v = math.expm1(x)
    elif op == OP_LOG1P:
        if x > -1.0:
            v = math.log1p(x)
        elif x == -1.0:
            v = -math.inf
        else:
            v = math.nan
    elif op == OP_ERF:
        v = math.erf(x)
    elif op == OP_ERFC:
        v = math.erfc(x)
    elif op == OP_COPY:
        v = x
    elif op == OP_ASINH:
        v = math.asinh(x)
    elif op == OP_ACOSH:
        v = math.acosh(x) if x >= 1.0 else math.nan
    elif op == OP_FACTORIAL:
        x = x + 1.0
        if x > 0.0 or (x < 0.0 and x != math.floor(x)):
            v = math.gamma(x) if x < 171.7 else math.inf
        else:
            v = math.nan
    elif op == OP_ATANH:
        if -1.0 < x < 1.0:
            v = math.atanh(x)
        elif x == 1.0:
            v = math.inf
        elif x == -1.0:
            v = -math.inf
        else:
            v = math.nan
    else:
        v = math.nan
    return v


@jit
def tape_load(prog, consts, reg):
    """Copy the constant pool into ``reg`` (inputs are the caller's job)."""
    n_in = prog[H_NIN]
    for i in range(prog[H_NCONST]):
        reg[n_in + i] = consts[i]


@jit
def tape_outputs(up, reg, out):
    """Gather the outputs after :func:`run_tape` (``up``: the program as uint64): the output
    registers plus the linear section. ``out`` has ``n_outputs`` entries."""
    o = _U_HEADER + _U4 * up[H_NINSTR]
    for i in range(out.shape[0]):
        out[i] = reg[up[o + np.uint64(i)]]
    nl = up[H_NLIN]
    lr = o + up[H_NOUT]
    lc = lr + nl
    lx = lc + nl
    for q in range(nl):
        uq = np.uint64(q)
        out[up[lr + uq]] += reg[up[lc + uq]] * reg[up[lx + uq]]


@jit
def run_tape_lanes(up, R, k0, k1, l0, l1):
    """:func:`run_tape` on many register files at once: ``R`` (n_registers, lanes) holds one
    register file per column ("lane", e.g. one parameter set each); instructions ``k0..k1-1``
    run on lanes ``l0..l1-1``. Each instruction is decoded once for all lanes and applied in a
    loop over the lanes that the compiler vectorizes, so the interpreter's dispatch is paid
    once per instruction, not once per lane. Per lane, the arithmetic is :func:`run_tape`'s,
    operation for operation (the same values to the last bit)."""
    base = up[H_NIN] + up[H_NCONST]
    for k in range(k0, k1):
        uk = np.uint64(k)
        p = _U_HEADER + _U4 * uk
        op = np.int64(up[p])
        a = up[p + _U1]
        b = up[p + _U2]
        c = up[p + _U3]
        d = base + uk
        if op == OP_MUL:
            for l in range(l0, l1):
                R[d, l] = R[a, l] * R[b, l]
        elif op == OP_ADD:
            for l in range(l0, l1):
                R[d, l] = R[a, l] + R[b, l]
        elif op == OP_SUB:
            for l in range(l0, l1):
                R[d, l] = R[a, l] - R[b, l]
        elif op == OP_MULADD:
            for l in range(l0, l1):
                R[d, l] = R[a, l] * R[b, l] + R[c, l]
        elif op == OP_NMULADD:
            for l in range(l0, l1):
                R[d, l] = R[c, l] - R[a, l] * R[b, l]
        elif op == OP_MULSUB:
            for l in range(l0, l1):
                R[d, l] = R[a, l] * R[b, l] - R[c, l]
        elif op == OP_DIV:
            for l in range(l0, l1):
                R[d, l] = R[a, l] / R[b, l]
        elif op == OP_NEG:
            for l in range(l0, l1):
                R[d, l] = -R[a, l]
        elif op == OP_SQUARE:
            for l in range(l0, l1):
                x = R[a, l]
                R[d, l] = x * x
        elif op == OP_POWI:
            e = np.int64(b)  # the exponent itself, signed
            for l in range(l0, l1):
                x = R[a, l]
                n = e if e >= 0 else -e
                r = 1.0
                while n > 0:
                    if n & 1:
                        r *= x
                    x *= x
                    n >>= 1
                R[d, l] = r if e >= 0 else 1.0 / r
        else:      # operands a unary opcode does not read are register 0 (in range)
            for l in range(l0, l1):
                R[d, l] = op_value(op, R[a, l], R[b, l], R[c, l])


@jit
def tape_outputs_lanes(up, R, out, l0, l1):
    """:func:`tape_outputs` for lanes ``l0..l1-1`` of a register block (see
    :func:`run_tape_lanes`) into ``out`` (n_outputs, lanes), in the same order of operations."""
    o = _U_HEADER + _U4 * up[H_NINSTR]
    for i in range(out.shape[0]):
        r = up[o + np.uint64(i)]
        for l in range(l0, l1):
            out[i, l] = R[r, l]
    nl = up[H_NLIN]
    lr = o + up[H_NOUT]
    lc = lr + nl
    lx = lc + nl
    for q in range(nl):
        uq = np.uint64(q)
        row = up[lr + uq]
        cr = up[lc + uq]
        xr = up[lx + uq]
        for l in range(l0, l1):
            out[row, l] += R[cr, l] * R[xr, l]


@jit
def eval_tape(prog, consts, inputs, reg, out):
    """Evaluate the whole tape: ``out[i] = expr_i(inputs)``. ``reg`` is scratch of length
    ``n_registers``."""
    n_in = prog[H_NIN]
    for i in range(n_in):
        reg[i] = inputs[i]
    tape_load(prog, consts, reg)
    up = prog.view(np.uint64)
    run_tape(up, reg, np.int64(0), prog[H_NINSTR])
    tape_outputs(up, reg, out)


@jit
def eval_tape_many(prog, consts, inputs, out):
    """Evaluate the tape for each row of ``inputs`` (2-D) into the rows of ``out``."""
    n_reg = prog[H_NIN] + prog[H_NCONST] + prog[H_NINSTR]
    reg = np.empty(n_reg)
    for r in range(inputs.shape[0]):
        eval_tape(prog, consts, inputs[r], reg, out[r])


def tape_source_hash() -> int:
    """A 63-bit hash of this file: numba-compiled code elsewhere that calls the kernels here
    closes over it so that its disk cache is invalidated when this file changes (numba keys
    a cache entry on the caller's own file only)."""
    data = Path(__file__).read_bytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") & ((1 << 63) - 1)
