"""The tape interpreter for many register files at once (run_tape_lanes, tape_outputs_lanes)
against the one-register-file interpreter (run_tape, tape_outputs): the same value, to the last
bit (nan where nan), for every opcode on ordinary and edge operands."""

import itertools

import numpy as np
import pytest

pytest.importorskip("numba")

from kinetics.codegen.tape import Tape  # noqa: E402
from kinetics.numerics import tape_machine as tm  # noqa: E402

EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.5, 3.0, 1e-300, 1e300, 171.5, 200.0, -3.5, np.inf, -np.inf, np.nan]


def one_instruction(op, b_literal=None):
    """A program of one instruction (op, 0, 1, 2) on inputs x, y, z; its output is that
    instruction's register (for POWI, b is the exponent)."""
    n_in = 3
    prog = np.zeros(tm.HEADER + 4 + 1, dtype=np.int64)
    prog[tm.H_VERSION] = tm.TAPE_VERSION
    prog[tm.H_NIN] = n_in
    prog[tm.H_NINSTR] = 1
    prog[tm.H_NOUT] = 1
    prog[tm.H_NVARYING] = n_in
    prog[tm.HEADER:tm.HEADER + 4] = [op, 0, b_literal if b_literal is not None else 1, 2]
    prog[tm.HEADER + 4] = n_in          # the output: register n_in + n_consts + 0
    return prog


def operands():
    rng = np.random.default_rng(4)
    edge = np.array(list(itertools.product(EDGES, EDGES[:9], [0.0, 1.0])))
    random = np.column_stack([rng.normal(0, 3, 300), rng.normal(0, 3, 300), rng.choice([0.0, 1.0, -2.0], 300)])
    return np.vstack([edge, random])


@pytest.mark.parametrize("op", [op for op in range(tm.N_OPS)], ids=[tm.OP_NAMES[op] for op in range(tm.N_OPS)])
def test_every_opcode_on_lanes_equals_the_single_interpreter(op):
    X = operands()
    literals = [-3, -1, 0, 1, 2, 7] if op == tm.OP_POWI else [None]
    for literal in literals:
        prog = one_instruction(op, literal)
        up = prog.view(np.uint64)
        single = np.empty(len(X))
        reg = np.zeros(4)
        out = np.empty(1)
        with np.errstate(all="ignore"):
            for r, (x, y, z) in enumerate(X):
                reg[:3] = x, y, z
                tm.run_tape(up, reg, 0, 1)
                tm.tape_outputs(up, reg, out)
                single[r] = out[0]
        R = np.zeros((4, len(X)))
        R[:3] = X.T
        lanes = np.empty((1, len(X)))
        tm.run_tape_lanes(up, R, 0, 1, 0, len(X))
        tm.tape_outputs_lanes(up, R, lanes, 0, len(X))
        np.testing.assert_array_equal(lanes[0], single, err_msg=f"{tm.OP_NAMES[op]} (b = {literal})")


def test_lanes_of_a_real_tape_with_constants_prologue_and_linear_section():
    """A tape from sympy (constants, a fixed prologue, fused multiply-adds, the linear section)
    on a block of lanes, some lanes left out (l0..l1)."""
    import sympy as sp
    x, y, k1, k2 = sp.symbols("x y k1 k2")
    tape = Tape.from_exprs([k1 * x - k2 * y + sp.exp(-x) * y / (1 + x**2), 0.25 * x + k1 * k2 * y, sp.Max(x, y) ** 2.5],
                           [x, y, k1, k2], n_varying=2, linear=[0, 1])
    assert tape.prog[tm.H_NLIN] > 0 and tape.n_fixed > 0
    rng = np.random.default_rng(2)
    inputs = rng.uniform(0.1, 3, (11, 4))
    want = tape.evaluate(inputs)
    R = np.zeros((tape.n_registers, 11))
    R[:4] = inputs.T
    R[4:4 + len(tape.consts)] = tape.consts[:, None]
    out = np.full((tape.n_outputs, 11), -7.0)
    tm.run_tape_lanes(tape.uprog, R, 0, tape.n_instructions, 2, 9)
    tm.tape_outputs_lanes(tape.uprog, R, out, 2, 9)
    np.testing.assert_array_equal(out[:, 2:9], want[2:9].T)
    assert (out[:, :2] == -7.0).all() and (out[:, 9:] == -7.0).all()      # lanes outside l0..l1 untouched
