"""Compiled stiff integrator (Rodas5P) for small nonlinear systems, driven by instruction tapes.

The model enters as data (a :class:`kinetics.codegen.tape.Tape`, built by
:func:`kinetics.codegen.tape.build_tapes`: this module never sees sympy), so the numba machine
code is compiled once, cached on disk and reused for every model: a new model never triggers a compilation.

Disk cache
    numba's ``cache=True``: the compiled code goes to ``__pycache__`` beside this file (the
    source tree for an editable install), or, where that is not writable, to numba's user-wide
    cache (``$NUMBA_CACHE_DIR`` if set, else ``~/.cache/numba``). The first call in a process
    loads it (about 0.25 s, mostly numba's own start-up); with an empty cache it compiles
    (about 14 s on a 2-core machine, once per machine and numba/Python version). numba
    invalidates an entry when its own source file changes; the integrator additionally keys
    on a hash of ``tape_machine.py`` (whose interpreter it calls), see :func:`_make_solver`.
    :func:`kinetics.warm_up` triggers the load or the compilation. The compiled code releases the GIL,
    so threads (e.g. a ThreadPoolExecutor over fit starts) integrate in parallel.

Method
    Rodas5P: an 8-stage, order-5 Rosenbrock-Wanner method with an embedded order-4 error
    estimate; L-stable and stiffly accurate, with an order-4 dense output. Coefficients from
    G. Steinebach, "Construction of Rosenbrock-Wanner method Rodas5P and numerical benchmarks
    within the Julia Differential Equations package", BIT Numer. Math. 63, 27 (2023), in the
    transformed ("W") form used by Hairer & Wanner, *Solving Ordinary Differential Equations
    II*, 2nd ed., Sect. IV.7 (the form of their code RODAS): stage vectors ``k_i`` solve
    ``(I/(h*gamma) - J) k_i = f(t + c_i h, y + sum_j a_ij k_j) + sum_j (C_ij/h) k_j
    + h d_i df/dt``; ``y1 = y + a_61 k_1 + ... + k_6 + k_7 + k_8``, error estimate ``k_8``.

Step control
    Hairer's initial-step heuristic (HW I, Sect. II.4), the error norm of RODAS
    (``sk_i = atol_i + rtol*max(|y_i|, |y1_i|)``, root mean square), and Gustafsson's
    predictive step-size controller as in RODAS (exponent 1/5 for the order-4 estimate).

Linear algebra
    A new Jacobian and LU factorization of ``I/(h*gamma) - J`` per step (after a rejection
    only the factorization is redone). The factorization follows the Jacobian's sparsity:
    a symbolic LU in the natural order (fill-in included) is computed once per Jacobian tape
    and run as a flat program with a threshold-pivoting test (``|pivot| >= 0.1 * max |column
    below|``, always met by compartmental, diagonally dominant matrices); if the test fails,
    that step uses a dense LU with partial pivoting instead.

Forward sensitivities (``n_base``)
    The system of a state x (n_base values) and its sensitivities S = dx/dtheta along K
    directions, y = [x, S] with S stored row-major (state i, direction k at n_base + i K + k),
    has the block lower-triangular Jacobian [[J, 0], [C, diag(J, ..., J)]]: every direction's
    block is the state's own J, and C = d(J S + F_p D)/dx couples them to x. Its iteration
    matrix is solved by block forward substitution with one factorization of the n_base x
    n_base matrix ``I/(h*gamma) - J`` (what CVODES's simultaneous-corrector method does):
    ``k_x = W^-1 r_x``, then ``k_S = W^-1 (r_S + C k_x)`` per direction. Pivoting therefore
    never mixes a sensitivity row into the state's elimination: the coupling entries grow
    with |S| (near a blow-up, 1e13 against a diagonal of 1e6) and a pivot taken from them
    would put their rounding error into the states' stages, which can leave the error
    estimate at rounding noise (err ~ 1 whatever h) and the integrator stalled.

    The error norm is the larger of the state's root-mean-square scaled error (as without
    sensitivities) and the sensitivities', these with tolerances ``SENSITIVITY_TOLERANCE``
    (100) times the state's (``integrate(..., sensitivity_tolerance=...)``; CVODES's
    ``errconS`` with its own sensitivity tolerances); the initial-step heuristic looks at the
    state only. Since the
    augmented Jacobian is exact (C k_x is the total derivative of J k_x), S is the exact
    derivative of the computed state along the step sequence; leaving the sensitivities out of
    the norm altogether (``inf``: the state's own steps) is therefore consistent but not
    always accurate: where the state is smooth and its derivative is not (a Hill term (x/K)^h
    of a state rising from 0, whose h-derivative has x^h log x), steps sized for the state
    leave the sensitivity 4e-3 off at rtol 1e-10. A factor 100 keeps the sensitivities
    controlled (to about 100 rtol) and costs Crauste's PEtab problem 406 steps at its nominal
    values, against 665 with one root-mean-square norm over all 65 values alike (before) and
    400 for the state alone.

    The system from its parts (``integrate(..., products=plan)``, :func:`product_plan`): tapes
    of the state's f, the structural nonzeros of J and of F_p D for the stages' right-hand
    side, and of J, dJ/dx and d(F_p D)/dx for the Jacobian (built by
    :func:`kinetics.codegen.tape.sensitivity_tapes`); compiled loops over each row's
    contiguous directions form J S + F_p D (:func:`sensitivity_rhs`) and the coupling C
    (:func:`coupling_values`). Tapes of the whole augmented system instead spend an
    interpreted instruction on every product J_ij S_jk (174 per stage for Crauste's 5 states
    and 12 directions, 34 for the parts) and differentiate all n (1 + K) values in all of
    them to build (20 states and 40 directions: 800 expressions in 820 symbols). The coupling
    is applied by (row, column) pairs over the directions likewise (:func:`_block_solve`).
    Crauste's step with sensitivities: 8.6 µs before, 3.7 µs with the parts and pairs
    (bench/README.md).

Output times
    By default the state at each output time comes from the dense output of the step that
    covers it (``dense_output=True``); ``dense_output=False`` instead shortens steps to land on
    every output time. Both are accurate; dense output takes fewer steps.

Time-dependent right-hand sides
    The Rosenbrock stages need ``df/dt``. Pass a ``dfdt`` tape (``build_tapes`` makes one
    symbolically whenever the right-hand side contains ``t``); without it, a right-hand side
    that reads input 0 gets a central finite difference with step
    ``eps**(1/3) * max(h, eps**(1/3) * |t|)`` (two more rhs evaluations per step).
    Integrate piecewise across discontinuities in ``t`` (doses, switches): restart there.

Watching (triggered events)
    :func:`integrate_watching` also evaluates a tape of functions g after every accepted step
    and stops after the first step at whose end some g_j has left its declared side; it returns
    that step (both ends and the 8 stage vectors) so that the caller locates the root on the
    step's interpolant (:func:`dense_state`). :func:`integrate` is the same kernel watching
    nothing.

Status codes: see the ``STATUS_*`` constants and :data:`STATUS_MESSAGES`. On failure the rows
of ``Y`` for output times not reached are nan.
"""

from __future__ import annotations

import math

import numpy as np

from .jit import jit as _jit_kernel
from .jit import numba_available
from .tape_machine import (H_NCONST, H_NFIXED, H_NIN, H_NINSTR, H_NOUT, HEADER, run_tape, tape_outputs,
                           tape_source_hash)

__all__ = [
    "integrate", "integrate_watching", "dense_state", "numba_available", "lu_plan", "block_lu_plan",
    "STATUS_OK", "STATUS_MAX_STEPS", "STATUS_STEP_UNDERFLOW", "STATUS_NONFINITE",
    "STATUS_SINGULAR", "STATUS_MESSAGES",
]

STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_STEP_UNDERFLOW = 2
STATUS_NONFINITE = 3
STATUS_SINGULAR = 4
STATUS_BAD_INPUT = 5  # internal: the wrapper raises ValueError instead

STATUS_MESSAGES = {
    STATUS_OK: "ok",
    STATUS_MAX_STEPS: "too many steps (max_steps reached)",
    STATUS_STEP_UNDERFLOW: "step size underflow (h below rounding level of t)",
    STATUS_NONFINITE: "non-finite values (rhs, Jacobian or state became inf/nan)",
    STATUS_SINGULAR: "singular iteration matrix I/(h*gamma) - J",
}


# --------------------------------------------------------------------------- Rodas5P tableau
# Steinebach (2023), Table/Appendix of the BIT paper; same numbers as the reference
# implementation in OrdinaryDiffEq.jl (Rodas5PTableau).
GAMMA = 0.21193756319429014

A21 = 3.0
A31 = 2.849394379747939
A32 = 0.45842242204463923
A41 = -6.954028509809101
A42 = 2.489845061869568
A43 = -10.358996098473584
A51 = 2.8029986275628964
A52 = 0.5072464736228206
A53 = -0.3988312541770524
A54 = -0.04721187230404641
A61 = -7.502846399306121
A62 = 2.561846144803919
A63 = -11.627539656261098
A64 = -0.18268767659942256
A65 = 0.030198172008377946

C21 = -14.155112264123755
C31 = -17.97296035885952
C32 = -2.859693295451294
C41 = 147.12150275711716
C42 = -1.41221402718213
C43 = 71.68940251302358
C51 = 165.43517024871676
C52 = -0.4592823456491126
C53 = 42.90938336958603
C54 = -5.961986721573306
C61 = 24.854864614690072
C62 = -3.0009227002832186
C63 = 47.4931110020768
C64 = 5.5814197821558125
C65 = -0.6610691825249471
C71 = 30.91273214028599
C72 = -3.1208243349937974
C73 = 77.79954646070892
C74 = 34.28646028294783
C75 = -19.097331116725623
C76 = -28.087943162872662
C81 = 37.80277123390563
C82 = -3.2571969029072276
C83 = 112.26918849496327
C84 = 66.9347231244047
C85 = -40.06618937091002
C86 = -54.66780262877968
C87 = -9.48861652309627

CC2 = 0.6358126895828704
CC3 = 0.4095798393397535
CC4 = 0.9769306725060716
CC5 = 0.4288403609558664

D1 = 0.21193756319429014
D2 = -0.42387512638858027
D3 = -0.3384627126235924
D4 = 1.8046452872882734
D5 = 2.325825639765069

# Dense output: y(t + theta h) = (1-theta) y0 + theta (y1 + (1-theta)(q1 + theta (q2 + theta q3)))
# with q_r = sum_j H_rj k_j.
H21 = 25.948786856663858
H22 = -2.5579724845846235
H23 = 10.433815404888879
H24 = -2.3679251022685204
H25 = 0.524948541321073
H26 = 1.1241088310450404
H27 = 0.4272876194431874
H28 = -0.17202221070155493
H31 = -9.91568850695171
H32 = -0.9689944594115154
H33 = 3.0438037242978453
H34 = -24.495224566215796
H35 = 20.176138334709044
H36 = 15.98066361424651
H37 = -6.789040303419874
H38 = -6.710236069923372
H41 = 11.419903575922262
H42 = 2.8879645146136994
H43 = 72.92137995996029
H44 = 80.12511834622643
H45 = -52.072871366152654
H46 = -59.78993625266729
H47 = -0.15582684282751913
H48 = 4.883087185713722

# Step-size control, RODAS defaults: h_new = h/fac with fac = h/h_new in [1/6, 5].
SAFE = 0.9
FACMIN = 1.0 / 6.0   # at most 6x larger
FACMAX = 5.0         # at most 5x smaller
EXPO = 0.2           # 1/(q+1), q = 4 the order of the embedded estimate
EPS = 2.220446049250313e-16
_ERRMIN_E = 1e-2 ** EXPO  # RODAS keeps max(1e-2, err) of the last accepted step
MAX_SINGULAR = 6
#: the sensitivities' tolerances in the error norm, relative to the state's (see the module docstring)
SENSITIVITY_TOLERANCE = 100.0

# --------------------------------------------------------------------------- numba kernels

def _jit(fn=None, *, inline="never"):
    """The shared kernel decorator (:func:`kinetics.numerics.jit.jit`), with inlining control."""
    return _jit_kernel(fn, inline=inline)


@_jit
def lu_factor_dense(M, piv):
    """Dense in-place LU with partial pivoting (row swaps applied to whole rows, LAPACK getrf
    convention). Returns False for an exactly singular or non-finite matrix."""
    n = M.shape[0]
    for k in range(n):
        p = k
        big = abs(M[k, k])
        for i in range(k + 1, n):
            v = abs(M[i, k])
            if v > big:
                big = v
                p = i
        if not (big > 0.0) or big == math.inf:
            return False
        piv[k] = p
        if p != k:
            for j in range(n):
                tmp = M[k, j]
                M[k, j] = M[p, j]
                M[p, j] = tmp
        inv = 1.0 / M[k, k]
        for i in range(k + 1, n):
            l = M[i, k] * inv
            M[i, k] = l
            if l != 0.0:
                for j in range(k + 1, n):
                    M[i, j] -= l * M[k, j]
    return True


@_jit
def lu_solve_dense(M, piv, b):
    """Solve M x = b in place with the factors from :func:`lu_factor_dense`."""
    n = M.shape[0]
    for k in range(n):
        p = piv[k]
        if p != k:
            tmp = b[k]
            b[k] = b[p]
            b[p] = tmp
    for i in range(1, n):
        s = b[i]
        for j in range(i):
            s -= M[i, j] * b[j]
        b[i] = s
    for i in range(n - 1, -1, -1):
        s = b[i]
        for j in range(i + 1, n):
            s -= M[i, j] * b[j]
        b[i] = s / M[i, i]


@_jit
def _set_inputs(reg, t, y):
    reg[0] = t
    for i in range(y.shape[0]):
        reg[1 + i] = y[i]


# NOTE on the disk cache: numba keys a cached function on its own source file only. Every
# function here that calls into kinetics.numerics.tape_machine (or uses its layout constants) therefore lives
# inside the closure built by _make_solver, whose cache key includes a hash of tape_machine.py; the
# module-level helpers below take plain numbers and arrays.


@_jit
def _registers(n_reg, n_in, consts, params, n):
    """A register file with the constants and the parameters in place."""
    reg = np.zeros(n_reg)
    for i in range(consts.shape[0]):
        reg[n_in + i] = consts[i]
    for i in range(params.shape[0]):
        reg[1 + n + i] = params[i]
    return reg


@_jit
def _all_finite(x):
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return False
    return True


@_jit
def _rms_scaled(x, y, rtol, atol_s, atol_v):
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        sk = (atol_v[i] if atol_v.shape[0] > 0 else atol_s) + rtol * abs(y[i])
        v = x[i] / sk
        s += v * v
    return math.sqrt(s / n)


# The layout of a ``products`` plan (see :func:`product_plan`): four counts, then index rows.
PRODUCTS_HEADER = 4
NO_PRODUCTS_PLAN = np.zeros(PRODUCTS_HEADER, dtype=np.int64)   # no entries at all


def product_plan(j_entries, g_entries, h_entries, dg_entries) -> np.ndarray:
    """The ``products`` argument of :func:`integrate`: how the integrator forms a
    state-and-sensitivities system (x, S row-major) from tapes of its parts instead of tapes of
    the whole augmented system (see "Forward sensitivities" in the module docstring).

    The rhs tape's outputs are f (n_base values), then the entries ``j_entries`` = [(i, j,
    guarded)] of the state's Jacobian J, then ``g_entries`` = [(i, k)] of F_p D: the
    integrator forms dS = J S + F_p D. The jac tape's outputs are the n_base x n_base block J
    (row-major, for the iteration matrix), then ``h_entries`` = [(i, j, l, guarded)], the
    values dJ_ij/dx_l, then ``dg_entries`` = [(i, k, l)], the values d(F_p D)_ik/dx_l: the
    coupling block C = d(J S + F_p D)/dx in row (i, k), column l is then sum_j dJ_ij/dx_l S_jk
    + d(F_p D)_ik/dx_l. ``guarded``: the product with S_jk counts as 0 where S_jk = 0 (the
    entry may be infinite there: a fractional power of an empty pool). Layout: ``[n_j, n_g,
    n_h, n_dg]``, then each entry list column by column."""
    lists = [(j_entries, 3), (g_entries, 2), (h_entries, 4), (dg_entries, 3)]
    columns = []
    for entries, width in lists:
        table = np.asarray(list(entries), dtype=np.int64).reshape(-1, width)
        columns.extend(table.T)
    return np.concatenate([np.array([len(e) for e, _ in lists], dtype=np.int64), *columns])


@_jit
def valid_products(splan, nb, nk, f_nout, j_nout):
    """Whether a ``products`` plan fits a system of nb states and nk directions whose rhs and
    jac tapes have f_nout and j_nout outputs."""
    if splan.shape[0] < PRODUCTS_HEADER:
        return False
    nj = splan[0]
    ng = splan[1]
    nh = splan[2]
    nd = splan[3]
    if (nj < 0 or ng < 0 or nh < 0 or nd < 0
            or splan.shape[0] != PRODUCTS_HEADER + 3 * nj + 2 * ng + 4 * nh + 3 * nd
            or f_nout != nb + nj + ng or j_nout != nb * nb + nh + nd):
        return False
    o = PRODUCTS_HEADER
    for q in range(nj):     # (i, j)
        if not (0 <= splan[o + q] < nb and 0 <= splan[o + nj + q] < nb):
            return False
    o += 3 * nj
    for q in range(ng):     # (i, k)
        if not (0 <= splan[o + q] < nb and 0 <= splan[o + ng + q] < nk):
            return False
    o += 2 * ng
    for q in range(nh):     # (i, j, l)
        if not (0 <= splan[o + q] < nb and 0 <= splan[o + nh + q] < nb and 0 <= splan[o + 2 * nh + q] < nb):
            return False
    o += 4 * nh
    for q in range(nd):     # (i, k, l)
        if not (0 <= splan[o + q] < nb and 0 <= splan[o + nd + q] < nk and 0 <= splan[o + 2 * nd + q] < nb):
            return False
    return True


@_jit
def decode_products(splan, nb, nk):
    """A valid ``products`` plan as the offsets :func:`sensitivity_rhs` and
    :func:`coupling_values` use (unsigned, which spares numba's negative-index checks in
    their loops).

    Right-hand side: per J entry the first output of its row (nb + i*nk) and the register of
    its column's first direction (1 + nb + j*nk), whether it is guarded, and per F_p D entry
    its output (nb + i*nk + k). Coupling: the pairs (i, l) of a state row and column with an
    entry (``c_row`` nb + i*nk, ``c_col`` l, for :func:`_block_solve`); per dJ/dx entry the
    offset of its pair's values (pair*nk), of its S row in y (nb + j*nk) and whether it is
    guarded; per d(F_p D)/dx entry its value's offset (pair*nk + k)."""
    nj = splan[0]
    ng = splan[1]
    nh = splan[2]
    nd = splan[3]
    o = PRODUCTS_HEADER
    j_out = np.empty(nj, dtype=np.uint64)
    j_reg = np.empty(nj, dtype=np.uint64)
    j_guard = np.zeros(nj, dtype=np.bool_)
    for q in range(nj):
        j_out[q] = nb + splan[o + q] * nk
        j_reg[q] = 1 + nb + splan[o + nj + q] * nk
        j_guard[q] = splan[o + 2 * nj + q] != 0
    o += 3 * nj
    g_out = np.empty(ng, dtype=np.uint64)
    for q in range(ng):
        g_out[q] = nb + splan[o + q] * nk + splan[o + ng + q]
    o += 2 * ng
    # the pairs (i, l), in row-major order (the order of the coupling's entries)
    pair = np.full((nb, nb), -1, dtype=np.int64)
    for q in range(nh):
        pair[splan[o + q], splan[o + 2 * nh + q]] = 0
    od = o + 4 * nh
    for q in range(nd):
        pair[splan[od + q], splan[od + 2 * nd + q]] = 0
    n_pairs = 0
    for i in range(nb):
        for l in range(nb):
            if pair[i, l] == 0:
                pair[i, l] = n_pairs
                n_pairs += 1
    c_row = np.empty(n_pairs, dtype=np.uint64)
    c_col = np.empty(n_pairs, dtype=np.uint64)
    for i in range(nb):
        for l in range(nb):
            if pair[i, l] >= 0:
                c_row[pair[i, l]] = nb + i * nk
                c_col[pair[i, l]] = l
    h_val = np.empty(nh, dtype=np.uint64)
    h_src = np.empty(nh, dtype=np.uint64)
    h_guard = np.zeros(nh, dtype=np.bool_)
    for q in range(nh):
        h_val[q] = pair[splan[o + q], splan[o + 2 * nh + q]] * nk
        h_src[q] = nb + splan[o + nh + q] * nk
        h_guard[q] = splan[o + 3 * nh + q] != 0
    d_val = np.empty(nd, dtype=np.uint64)
    for q in range(nd):
        d_val[q] = pair[splan[od + q], splan[od + 2 * nd + q]] * nk + splan[od + nd + q]
    return j_out, j_reg, j_guard, g_out, c_row, c_col, h_val, h_src, h_guard, d_val


@_jit(inline="always")
def _add_scaled(dst, d0, v, src, s0, count, guarded):
    """dst[d0 + k] += v * src[s0 + k] for k < count (unsigned offsets and count), the terms
    with src = 0 left out when ``guarded`` (v may be infinite there: the product's limit is 0)."""
    if guarded:
        for k in range(count):
            s = src[s0 + k]
            if s != 0.0:
                dst[d0 + k] += v * s
    else:
        for k in range(count):
            dst[d0 + k] += v * src[s0 + k]


@_jit
def coupling_values(jv, y, nb, nk, h_val, h_src, h_guard, d_val, cv):
    """The coupling block's values by pairs (see :func:`decode_products`) at the state and
    sensitivities y: cv[pair*nk + k] = sum_j dJ_ij/dx_l S_jk + d(F_p D)_ik/dx_l, from the jac
    tape's values ``jv`` of dJ/dx (first) and d(F_p D)/dx. A guarded entry's product counts as
    0 where S_jk = 0. Returns whether every value is finite."""
    nh = h_val.shape[0]
    ukn = np.uint64(nk)
    for q in range(cv.shape[0]):
        cv[q] = 0.0
    for q in range(nh):
        _add_scaled(cv, h_val[q], jv[q], y, h_src[q], ukn, h_guard[q])
    for q in range(d_val.shape[0]):
        cv[d_val[q]] += jv[nh + q]
    for q in range(cv.shape[0]):
        if not math.isfinite(cv[q]):
            return False
    return True


@_jit
def sensitivity_rhs(fo, reg, out, nb, nk, j_out, j_reg, j_guard, g_out):
    """The right-hand side of a state-and-sensitivities system from the outputs ``fo`` of its
    product tape (see :func:`product_plan`, decoded by :func:`decode_products`) and the
    stage's sensitivities S in ``reg`` (inputs 1 + nb + j*nk + k): out = [f, J S + F_p D], S
    and dS row-major. Compiled loops over the contiguous directions of a row, where the
    interpreted tape of the whole augmented system spent an instruction on every product
    J_ij S_jk."""
    n_j = j_out.shape[0]
    for i in range(nb):
        out[i] = fo[i]
    for r in range(nb, out.shape[0]):
        out[r] = 0.0
    ukn = np.uint64(nk)
    for q in range(g_out.shape[0]):
        out[g_out[q]] = fo[nb + n_j + q]
    for q in range(n_j):
        _add_scaled(out, j_out[q], fo[nb + q], reg, j_reg[q], ukn, j_guard[q])


@_jit
def valid_arguments(n, m, f_nin, f_nout, j_nin, j_nout, d_nin, d_nout, tmode, plan_n, t0, times, rtol,
                    atol_s, atol_v, nb):
    """Consistency of the arguments of the integrator (the wrapper explains failures)."""
    n_in = 1 + n + m
    if n == 0 or f_nin != n_in or j_nin != n_in or f_nout != n or j_nout != n * n or plan_n != nb:
        return False
    if nb < 1 or nb > n or n % nb != 0:
        return False
    if tmode == 1 and (d_nin != n_in or d_nout != n):
        return False
    if atol_v.shape[0] != 0 and atol_v.shape[0] != n:
        return False
    for i in range(atol_v.shape[0]):
        if not (atol_v[i] > 0.0) or atol_v[i] == math.inf:
            return False
    if atol_v.shape[0] == 0 and (not (atol_s > 0.0) or atol_s == math.inf):
        return False
    if not (rtol >= 0.0) or rtol == math.inf or not math.isfinite(t0):
        return False
    for i in range(times.shape[0]):
        if not math.isfinite(times[i]) or times[i] < t0 or (i > 0 and times[i] < times[i - 1]):
            return False
    return True


@_jit
def initial_step_guess(y, f0, rtol, atol_s, atol_v, span):
    d0 = _rms_scaled(y, y, rtol, atol_s, atol_v)
    d1 = _rms_scaled(f0, y, rtol, atol_s, atol_v)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    return min(h0, span)


@_jit
def initial_step(y, f0, f1, h0, rtol, atol_s, atol_v):
    """Second half of Hairer's initial step: f1 = f(t0 + h0, y0 + h0 f0) (overwritten)."""
    for i in range(y.shape[0]):
        f1[i] -= f0[i]
    d1 = _rms_scaled(f0, y, rtol, atol_s, atol_v)
    d2 = _rms_scaled(f1, y, rtol, atol_s, atol_v) / h0
    dm = max(d1, d2)
    if not (dm > 1e-15):
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dm) ** EXPO
    h = min(100.0 * h0, h1)
    if not (h > 0.0):
        h = 1e-6
    return h


@_jit
def _dense_output(theta, y0, y1, K, out):
    """Rodas5P's order-4 interpolant at t0 + theta*h (HW II, IV.7 form, coefficients TH)."""
    th1 = 1.0 - theta
    for i in range(y0.shape[0]):
        q1 = 0.0
        q2 = 0.0
        q3 = 0.0
        for j in range(8):
            kj = K[j, i]
            q1 += TH[0, j] * kj
            q2 += TH[1, j] * kj
            q3 += TH[2, j] * kj
        out[i] = th1 * y0[i] + theta * (y1[i] + th1 * (q1 + theta * (q2 + theta * q3)))


# Sparse LU plan (int64), for elimination in the natural order without row exchanges of a
# matrix with a fixed pattern (the Jacobian's plus the diagonal plus fill-in). Layout:
#   plan[P_N], plan[P_NL], plan[P_NU], plan[P_NPAT], plan[P_NOPS]: n, entries of L below and
#   of U above the diagonal, entries of the pattern, operations of the LU program;
#   plan[P_xxx] for the other P_* names: offsets of the sections
#     LR, LC (nL): L entries column by column, the order of the forward substitution,
#     UR, UC (nU): U entries from the last row up, the order of the back substitution,
#     FPOS (npat): flat positions i*n+j of the pattern, LPOS (nL), UPOS (nU): of L and U,
#     OPS (3*nops): the factorization as a flat program of (code, a, b):
#        AMAX  (0, pos, -): amax = max(amax, |M[pos]|) over the column below a pivot
#        PIVOT (1, k, pos): threshold test of M[pos] against amax, dinv[k] = 1/M[pos]
#        MULT  (2, pos, k): l = M[pos] *= dinv[k]
#        UPD   (3, pos_ij, pos_kj): M[pos_ij] -= l * M[pos_kj]
# Flat loops with unsigned indices: at these sizes loop set-up, not arithmetic, is the cost.
P_N, P_NL, P_NU, P_NPAT, P_NOPS = 0, 1, 2, 3, 4
P_LR, P_LC, P_UR, P_UC, P_FPOS, P_LPOS, P_UPOS, P_OPS = 5, 6, 7, 8, 9, 10, 11, 12
PLAN_HEADER = 13
PIVOT_THRESHOLD = 0.1  # threshold partial pivoting test; below it: dense LU with pivoting


@_jit(inline="always")
def _sparse_lu(M, ops, lpos, upos, urow, dinv, Lv, Uv):
    """In-place LU of the flat (row-major) n*n array M by the plan's LU program ``ops``
    (uint64); then gathers the factors for :func:`_sparse_solve`: ``Lv`` (the multipliers)
    and ``Uv`` (U scaled by its row's pivot inverse). Returns False when a pivot fails the
    threshold test ``|M_kk| >= PIVOT_THRESHOLD * max_i>k |M_ik|`` (or is zero or
    non-finite); the caller then refactors with partial pivoting."""
    amax = 0.0
    l = 0.0
    for q in range(0, ops.shape[0], 3):
        code = np.int64(ops[q])
        a = ops[q + 1]
        b = ops[q + 2]
        if code == 3:
            M[a] -= l * M[b]
        elif code == 2:
            l = M[a] * dinv[b]
            M[a] = l
        elif code == 0:
            v = abs(M[a])
            if v > amax:
                amax = v
        else:
            piv = M[b]
            apiv = abs(piv)
            if not (apiv >= PIVOT_THRESHOLD * amax and apiv > 0.0 and apiv < math.inf):
                return False
            dinv[a] = 1.0 / piv
            amax = 0.0
    for q in range(lpos.shape[0]):
        Lv[q] = M[lpos[q]]
    for q in range(upos.shape[0]):
        Uv[q] = M[upos[q]] * dinv[urow[q]]
    return True


@_jit(inline="always")
def _sparse_solve(n, Lr, Lc, Lv, dinv, Ur, Uc, Uv, b):
    """Solve with the factors of :func:`_sparse_lu`: three flat loops (unsigned indices)."""
    for q in range(Lr.shape[0]):
        b[Lr[q]] -= Lv[q] * b[Lc[q]]
    for i in range(n):
        b[i] *= dinv[i]
    for q in range(Ur.shape[0]):
        b[Ur[q]] -= Uv[q] * b[Uc[q]]


@_jit
def _block_solve(b, nb, nk, sparse, Lr, Lc, Lv, dinv, Ur, Uc, Uv, Md, piv, c_row, c_col, cv, z):
    """Solve the iteration matrix of a state-and-sensitivities system (see the module
    docstring) in place: ``b[:nb] = W^-1 b[:nb]``, then per direction k the entries
    ``nb + i*nk + k`` (i < nb) become ``W^-1 (b_k + C_k b[:nb])``. The coupling C by pairs q
    of a state row i and column j: ``c_row[q]`` = nb + i*nk, ``c_col[q]`` = j, values
    ``cv[q*nk + k]`` for the nk directions; W's factors are sparse or dense."""
    x = b[0:nb]
    if sparse:
        _sparse_solve(nb, Lr, Lc, Lv, dinv, Ur, Uc, Uv, x)
    else:
        lu_solve_dense(Md, piv, x)
    # unsigned offsets and counts: numba then skips its negative-index checks in the loops
    ukn = np.uint64(nk)
    unb = np.uint64(nb)
    for q in range(c_row.shape[0]):
        r = c_row[q]
        v = x[c_col[q]]
        o = np.uint64(q) * ukn
        for k in range(ukn):
            b[r + k] += cv[o + k] * v
    if sparse:
        # every direction at once: each operation of the sparse solve on a row of the
        # (nb, nk) block, whose entries are contiguous; per direction the same operations
        # in the same order as _sparse_solve, so the same numbers, without its per-direction
        # gather, loop overhead and scatter (the solves were ~40 % of a step's time)
        for q in range(Lr.shape[0]):
            r = unb + Lr[q] * ukn
            c = unb + Lc[q] * ukn
            v = Lv[q]
            for k in range(ukn):
                b[r + k] -= v * b[c + k]
        for i in range(nb):
            d = dinv[i]
            r = unb + np.uint64(i) * ukn
            for k in range(ukn):
                b[r + k] *= d
        for q in range(Ur.shape[0]):
            r = unb + Ur[q] * ukn
            c = unb + Uc[q] * ukn
            v = Uv[q]
            for k in range(ukn):
                b[r + k] -= v * b[c + k]
        return
    for k in range(nk):
        for i in range(nb):
            z[i] = b[nb + i * nk + k]
        lu_solve_dense(Md, piv, z)
        for i in range(nb):
            b[nb + i * nk + k] = z[i]


def _make_lu_plan(pattern) -> np.ndarray:
    """Symbolic LU (natural order) of a boolean n x n pattern, the diagonal added; the plan
    layout is described above. Plain numpy: it runs once per Jacobian tape."""
    P = np.array(pattern, dtype=bool)
    n = P.shape[0]
    P[np.arange(n), np.arange(n)] = True
    rows_of, cols_of = [], []
    for k in range(n):  # fill-in
        rows = k + 1 + np.flatnonzero(P[k + 1:, k])
        cols = k + 1 + np.flatnonzero(P[k, k + 1:])
        if rows.size and cols.size:
            P[np.ix_(rows, cols)] = True
        rows_of.append(rows)
        cols_of.append(cols)
    L_r, L_c, ops = [], [], []
    for k in range(n):
        rows, cols = rows_of[k], cols_of[k]
        ops += [(0, i * n + k, 0) for i in rows]           # AMAX over the column below
        ops.append((1, k, k * n + k))                      # PIVOT
        for i in rows:
            L_r.append(i)
            L_c.append(k)
            ops.append((2, i * n + k, k))                  # MULT
            ops += [(3, i * n + j, k * n + j) for j in cols]   # UPD
    U_r, U_c = [], []
    for k in range(n - 1, -1, -1):
        for j in cols_of[k]:
            U_r.append(k)
            U_c.append(j)
    L_r = np.array(L_r, dtype=np.int64)
    L_c = np.array(L_c, dtype=np.int64)
    U_r = np.array(U_r, dtype=np.int64)
    U_c = np.array(U_c, dtype=np.int64)
    fpos = np.flatnonzero(P.ravel())
    sections = [(P_LR, L_r), (P_LC, L_c), (P_UR, U_r), (P_UC, U_c), (P_FPOS, fpos),
                (P_LPOS, L_r * n + L_c), (P_UPOS, U_r * n + U_c),
                (P_OPS, np.array(ops, dtype=np.int64).ravel())]
    plan = np.zeros(PLAN_HEADER + sum(len(a) for _, a in sections), dtype=np.int64)
    plan[P_N] = n
    plan[P_NL] = len(L_r)
    plan[P_NU] = len(U_r)
    plan[P_NPAT] = len(fpos)
    plan[P_NOPS] = len(ops)
    o = PLAN_HEADER
    for field, arr in sections:
        plan[field] = o
        plan[o:o + len(arr)] = arr
        o += len(arr)
    return plan


def _jacobian_pattern(jac, n: int) -> np.ndarray:
    """Structural nonzeros of a Jacobian tape: an output that is the constant 0 is zero."""
    out = jac.out_index
    n_in = jac.n_inputs
    const_idx = out - n_in
    is_const = (out >= n_in) & (const_idx < len(jac.consts))
    zero = np.zeros(out.shape[0], dtype=bool)
    zero[is_const] = jac.consts[const_idx[is_const]] == 0.0
    return (~zero)[:n * n].reshape(n, n)


def lu_plan(jac, n: int) -> np.ndarray:
    """The sparse-LU plan for ``I/(h*gamma) - J`` (cached on the tape)."""
    plan = jac.aux.get("lu_plan")
    if plan is None or plan[0] != n:
        if jac.n_outputs != n * n or n == 0:
            raise ValueError(f"jac tape has {jac.n_outputs} outputs, expected {n} states "
                             f"squared = {n * n}")
        plan = _make_lu_plan(_jacobian_pattern(jac, n))
        jac.aux["lu_plan"] = plan
    return plan


def state_block_lu_plan(jac, n_base: int) -> np.ndarray:
    """The sparse-LU plan of ``I/(h*gamma) - J`` for a jac tape whose first n_base * n_base
    outputs are the state's J (the jac tape of a ``products`` system, see :func:`product_plan`;
    cached on the tape)."""
    key = ("lu_plan_state", n_base)
    plan = jac.aux.get(key)
    if plan is None:
        if n_base < 1 or jac.n_outputs < n_base * n_base:
            raise ValueError(f"jac tape has {jac.n_outputs} outputs, fewer than the state's block of "
                             f"{n_base} x {n_base}")
        plan = _make_lu_plan(_jacobian_pattern(jac, n_base))
        jac.aux[key] = plan
    return plan


def block_lu_plan(jac, n: int, n_base: int) -> np.ndarray:
    """The sparse-LU plan of the state block ``I/(h*gamma) - J`` of a state-and-sensitivities
    system of n = n_base (1 + K) values (see the module docstring; cached on the tape). Raises
    ValueError when the Jacobian's pattern is not that block lower-triangular form."""
    key = ("lu_plan_block", n, n_base)
    plan = jac.aux.get(key)
    if plan is None:
        if jac.n_outputs != n * n or n_base < 1 or n % n_base:
            raise ValueError(f"jac tape has {jac.n_outputs} outputs for {n} values; a state-and-sensitivities "
                             f"system needs n a multiple of n_base = {n_base} and n*n outputs")
        pattern = _jacobian_pattern(jac, n)
        nk = n // n_base - 1
        base = pattern[:n_base, :n_base]
        S = pattern[n_base:, n_base:].reshape(n_base, nk, n_base, nk)   # (i, k, j, l)
        diagonal = np.einsum("ikjk->ikj", S)
        off = S.copy()
        for k in range(nk):
            off[:, k, :, k] = False
        if pattern[:n_base, n_base:].any() or off.any() or (diagonal & ~base[:, None, :]).any():
            raise ValueError("the Jacobian is not block lower-triangular with the state's own block on the "
                             "diagonal: not a state-and-sensitivities system; integrate it without n_base")
        plan = _make_lu_plan(base)
        jac.aux[key] = plan
    return plan


# Dense-output weights: q_r = sum_j TH[r-1, j] k_j (r = 1, 2, 3), see H21..H48 above.
TH = np.array([
    [H21, H22, H23, H24, H25, H26, H27, H28],
    [H31, H32, H33, H34, H35, H36, H37, H38],
    [H41, H42, H43, H44, H45, H46, H47, H48],
], dtype=np.float64)


def _make_solver(dependency_hash, name):
    """Build the integrator, a kernel named ``name``. It closes over ``dependency_hash`` (a hash
    of tape_machine.py) so that numba's disk cache, which keys entries on this file only, is
    invalidated when the tape interpreter it calls changes (every call into tape_machine
    happens inside it). The name keeps the disk-cache entries of the kernels made here apart."""

    def core(fprog, fconsts, jprog, jconsts, dprog, dconsts, tmode, plan, y0, params, t0,
             times, rtol, atol_s, atol_v, max_steps, first_step, dense, n_base, sens_weight, splan, gprog, gconsts,
             sides, crossing_t, crossing_y):
        """The integrator. With ``sides`` (None: nothing watched) it also watches the outputs g
        of the tape ``gprog`` (inputs as the right-hand side's) after every accepted step, and stops at
        the first step after which some g_j is nonzero with a sign other than ``sides[j]``:
        then ``crossing_t`` = (t_old, t_new, 1) and ``crossing_y`` rows = y_old, y_new and the
        8 stage vectors (the step's dense output, see :func:`dense_state`), and the output
        rows after t_old are left nan."""
        if dependency_hash == -1:  # never true; makes the hash a closure variable
            rtol = rtol + 0.0
        n = y0.shape[0]
        m = params.shape[0]
        nt = times.shape[0]
        Y = np.full((nt, n), np.nan)
        # sides None: nothing watched (integrate); numba then compiles a version without the
        # watching code (the `sides is None` branches are removed before typing), which runs
        # faster than the watching version with nothing to watch
        n_watch = 0
        if sides is not None:
            n_watch = sides.shape[0]
        # state-and-sensitivities system: W = I/(h gamma) - J of the first nb values is
        # factored, the rest solved by block substitution (see the module docstring)
        nb = n if n_base <= 0 else n_base
        blocked = nb < n
        nk = (n - nb) // nb
        # the error norm weighs a sensitivity's scaled error by sens_weight (the state's by 1);
        # the initial-step heuristic looks at the state's nb values
        ne = nb
        # ---------------------------------------------------------------- validation
        # with a products plan the tapes give the parts of the system (product_plan): its
        # output counts are checked there
        products = splan.shape[0] > 0
        if not valid_arguments(n, m, fprog[H_NIN], n if products else fprog[H_NOUT], jprog[H_NIN],
                               n * n if products else jprog[H_NOUT], dprog[H_NIN], dprog[H_NOUT], tmode,
                               plan[0], t0, times, rtol, atol_s, atol_v, nb):
            return Y, STATUS_BAD_INPUT, 0, 0
        if products and (not blocked or tmode == 2
                         or not valid_products(splan, nb, nk, fprog[H_NOUT], jprog[H_NOUT])):
            return Y, STATUS_BAD_INPUT, 0, 0
        if n_watch > 0 and (gprog[H_NIN] != 1 + n + m or gprog[H_NOUT] != n_watch
                            or crossing_t.shape[0] != 3 or crossing_y.shape[0] != 10
                            or crossing_y.shape[1] != n):
            return Y, STATUS_BAD_INPUT, 0, 0
        if sides is not None:
            crossing_t[2] = 0.0
        # ---------------------------------------------------------------- set-up
        zero = np.int64(0)
        ufprog = fprog.view(np.uint64)
        ujprog = jprog.view(np.uint64)
        udprog = dprog.view(np.uint64)
        regf = _registers(fprog[H_NIN] + fprog[H_NCONST] + fprog[H_NINSTR], fprog[H_NIN],
                          fconsts, params, n)
        run_tape(ufprog, regf, zero, fprog[H_NFIXED])   # parameter-only prologue
        regj = _registers(jprog[H_NIN] + jprog[H_NCONST] + jprog[H_NINSTR], jprog[H_NIN],
                          jconsts, params, n)
        run_tape(ujprog, regj, zero, jprog[H_NFIXED])
        if tmode == 1:
            regd = _registers(dprog[H_NIN] + dprog[H_NCONST] + dprog[H_NINSTR], dprog[H_NIN],
                              dconsts, params, n)
            run_tape(udprog, regd, zero, dprog[H_NFIXED])
        else:
            regd = np.zeros(1)
        if n_watch > 0:
            ugprog = gprog.view(np.uint64)
            regg = _registers(gprog[H_NIN] + gprog[H_NCONST] + gprog[H_NINSTR], gprog[H_NIN],
                              gconsts, params, n)
            run_tape(ugprog, regg, zero, gprog[H_NFIXED])
        else:
            ugprog = gprog.view(np.uint64)
            regg = np.zeros(1)
        gval = np.empty(n_watch)
        f_k0 = fprog[H_NFIXED]
        f_k1 = fprog[H_NINSTR]
        j_k0 = jprog[H_NFIXED]
        j_k1 = jprog[H_NINSTR]
        jo = HEADER + 4 * j_k1
        sk_atol = np.empty(n)
        for i in range(n):
            sk_atol[i] = atol_v[i] if atol_v.shape[0] > 0 else atol_s

        iout = 0
        while iout < nt and times[iout] == t0:
            for i in range(n):
                Y[iout, i] = y0[i]
            iout += 1
        if iout == nt:
            return Y, STATUS_OK, 0, 0
        tend = times[nt - 1]

        y = y0.copy()
        y1 = np.empty(n)
        fo = np.empty(fprog[H_NOUT] if products else 1)
        (j_out, j_reg, j_guard, g_out, pc_row, pc_col, h_val, h_src, h_guard,
         d_val) = decode_products(splan if products else NO_PRODUCTS_PLAN, nb, nk)
        # the Jacobian tape's stride: the whole system's n x n, or the state's nb x nb block
        # followed by the coupling's parts (products)
        jst = nb if products else n
        f0 = np.empty(n)
        fa = np.empty(n)
        fb = np.empty(n)
        du = np.empty(n)
        dT = np.zeros(n)
        M = np.zeros(nb * nb)      # sparse factors (flat, row-major)
        Md = np.zeros((nb, nb))    # dense factors (fallback with partial pivoting)
        zb = np.zeros(nb)
        # the sparse-LU plan as unsigned index arrays (see _make_lu_plan)
        uplan = plan.view(np.uint64)
        n_pat = plan[P_NPAT]
        Lr = uplan[plan[P_LR]:plan[P_LR] + plan[P_NL]]
        Lc = uplan[plan[P_LC]:plan[P_LC] + plan[P_NL]]
        Ur = uplan[plan[P_UR]:plan[P_UR] + plan[P_NU]]
        Uc = uplan[plan[P_UC]:plan[P_UC] + plan[P_NU]]
        fpos = uplan[plan[P_FPOS]:plan[P_FPOS] + n_pat]
        lpos = uplan[plan[P_LPOS]:plan[P_LPOS] + plan[P_NL]]
        upos = uplan[plan[P_UPOS]:plan[P_UPOS] + plan[P_NU]]
        lu_ops = uplan[plan[P_OPS]:plan[P_OPS] + 3 * plan[P_NOPS]]
        jout = ujprog[jo:jo + jprog[H_NOUT]]   # register of each Jacobian output
        # the register of each entry of the state's block in the sparse-LU plan's order (its
        # positions are in the nb x nb block; once here, not a division per entry and step)
        jreg = np.empty(n_pat, dtype=np.uint64)
        for q in range(n_pat):
            pos = np.int64(fpos[q])     # (int64: uint64 with int64 arithmetic gives float)
            jreg[q] = jout[(pos // nb) * jst + pos % nb]
        # the coupling block d(S')/dx of a sensitivity system by pairs (i, j) of a state row and
        # column with some structural nonzero (an entry that is not the constant 0 of the tape)
        # in one of the directions: rows nb + i*nk + k (k < nk) below the states, column j; its
        # values per pair for all directions, contiguous as the rows of S are (_block_solve)
        j_nin = jprog[H_NIN]
        j_nconst = jprog[H_NCONST]
        n_pairs = pc_row.shape[0]     # (products: from the plan)
        for i in range(nb if blocked and not products else 0):
            for j in range(nb):
                for k in range(nk):
                    reg_ = np.int64(jout[(nb + i * nk + k) * n + j])
                    if not (reg_ >= j_nin and reg_ < j_nin + j_nconst and jconsts[reg_ - j_nin] == 0.0):
                        n_pairs += 1
                        break
        c_row = pc_row if products else np.empty(n_pairs, dtype=np.uint64)
        c_col = pc_col if products else np.empty(n_pairs, dtype=np.uint64)
        cpos = np.empty(0 if products else n_pairs * nk, dtype=np.int64)
        cv = np.zeros(n_pairs * nk)
        jv = np.empty(jout.shape[0] - nb * nb if products else 0)    # dJ/dx, d(F_p D)/dx values
        q = 0
        for i in range(nb if blocked and not products else 0):
            for j in range(nb):
                structural = False
                for k in range(nk):
                    reg_ = np.int64(jout[(nb + i * nk + k) * n + j])
                    if not (reg_ >= j_nin and reg_ < j_nin + j_nconst and jconsts[reg_ - j_nin] == 0.0):
                        structural = True
                if structural:
                    c_row[q] = nb + i * nk
                    c_col[q] = j
                    for k in range(nk):
                        cpos[q * nk + k] = (nb + i * nk + k) * n + j
                    q += 1
        piv = np.zeros(nb, dtype=np.int64)
        dinv = np.zeros(nb)
        Lv = np.zeros(max(plan[P_NL], 1))
        Uv = np.zeros(max(plan[P_NU], 1))
        K = np.empty((8, n))
        k1 = K[0]
        k2 = K[1]
        k3 = K[2]
        k4 = K[3]
        k5 = K[4]
        k6 = K[5]
        k7 = K[6]
        k8 = K[7]
        Ks = (k1, k2, k3, k4, k5, k6, k7, k8)

        t = t0
        _set_inputs(regf, t, y)
        run_tape(ufprog, regf, f_k0, f_k1)
        # with products, the state's f (fo[:nb]) for the initial step; the whole f0 once per
        # accepted point with the Jacobian (one call site of sensitivity_rhs there and one in the
        # stages: each call site costs the kernel's compilation about 0.7 s)
        tape_outputs(ufprog, regf, fo if products else f0)
        nfev = 1
        if not _all_finite(fo[:nb] if products else f0):
            return Y, STATUS_NONFINITE, 0, nfev
        f_state = fo if products else f0

        # ---------------------------------------------------------------- initial step
        if first_step > 0.0:
            h = first_step
        else:
            # Hairer's heuristic (HW I, II.4): one extra rhs evaluation at t + h0
            atol_e = atol_v[:ne] if atol_v.shape[0] > 0 else atol_v
            h0 = initial_step_guess(y[:ne], f_state[:ne], rtol, atol_s, atol_e, tend - t)
            for i in range(ne):
                fb[i] = y[i] + h0 * f_state[i]
            for i in range(ne, n):
                fb[i] = y[i]
            if not products:
                for i in range(ne, n):
                    fb[i] += h0 * f0[i]
            for i in range(ne):
                du[i] = f_state[i]      # (fo is overwritten next)
            _set_inputs(regf, t + h0, fb)
            run_tape(ufprog, regf, f_k0, f_k1)
            tape_outputs(ufprog, regf, fo if products else fa)
            nfev += 1
            h = initial_step(y[:ne], du[:ne], (fo if products else fa)[:ne], h0, rtol, atol_s, atol_e)
        h = min(h, tend - t)

        status = STATUS_OK
        nsteps = 0
        naccept = 0
        nsing = 0
        reject = False
        last_nonfinite = False
        need_jac = True
        hacc = 0.0
        erracc_e = 1.0   # max(1e-2, err of the last accepted step) ** EXPO
        cbrt_eps = 6.055454452393343e-06
        sparse = True

        while True:
            # ---- choose the step
            target = tend if dense else times[iout]
            last = False
            if t + 1.0001 * h >= target:
                h = target - t
                last = True
            if 0.1 * abs(h) <= abs(t) * EPS or not (h > 0.0):
                status = STATUS_NONFINITE if last_nonfinite else STATUS_STEP_UNDERFLOW
                break
            if nsteps >= max_steps:
                status = STATUS_MAX_STEPS
                break
            # ---- Jacobian (and df/dt) at (t, y): once per accepted point
            if need_jac:
                _set_inputs(regj, t, y)
                run_tape(ujprog, regj, j_k0, j_k1)
                for q in range(n_pat):
                    if not math.isfinite(regj[jreg[q]]):
                        status = STATUS_NONFINITE
                if products:
                    for q in range(jv.shape[0]):
                        jv[q] = regj[jout[nb * nb + q]]
                    if not coupling_values(jv, y, nb, nk, h_val, h_src, h_guard, d_val, cv):
                        status = STATUS_NONFINITE
                else:
                    for q in range(cpos.shape[0]):
                        v = regj[jout[cpos[q]]]
                        cv[q] = v
                        if not math.isfinite(v):
                            status = STATUS_NONFINITE
                if status != STATUS_OK:
                    break
                if products:
                    # f0 at the accepted point (see the first evaluation above)
                    _set_inputs(regf, t, y)
                    run_tape(ufprog, regf, f_k0, f_k1)
                    tape_outputs(ufprog, regf, fo)
                    sensitivity_rhs(fo, regf, f0, nb, nk, j_out, j_reg, j_guard, g_out)
                    nfev += 1
                    if not _all_finite(f0):
                        status = STATUS_NONFINITE
                        break
                if tmode == 1:
                    _set_inputs(regd, t, y)
                    run_tape(udprog, regd, dprog[H_NFIXED], dprog[H_NINSTR])
                    tape_outputs(udprog, regd, dT)
                elif tmode == 2:
                    # central difference; the step scales with the step size (the time
                    # scale being resolved) but stays well above the spacing of t's floats
                    delta = cbrt_eps * max(h, cbrt_eps * abs(t))
                    tp = t + delta
                    tm = t - delta
                    # (not with products: they come with a dfdt tape, valid_products)
                    _set_inputs(regf, tp, y)
                    run_tape(ufprog, regf, f_k0, f_k1)
                    tape_outputs(ufprog, regf, fa)
                    _set_inputs(regf, tm, y)
                    run_tape(ufprog, regf, f_k0, f_k1)
                    tape_outputs(ufprog, regf, fb)
                    nfev += 2
                    for i in range(n):
                        dT[i] = (fa[i] - fb[i]) / (tp - tm)
                need_jac = False
            # ---- iteration matrix I/(h gamma) - J and its LU factors
            # (the Jacobian values stay in regj until the next evaluation)
            inv_hg = 1.0 / (h * GAMMA)
            for q in range(n_pat):
                M[fpos[q]] = -regj[jreg[q]]
            for i in range(nb):
                M[i * nb + i] += inv_hg
            sparse = _sparse_lu(M, lu_ops, lpos, upos, Ur, dinv, Lv, Uv)
            if not sparse:
                for i in range(nb):
                    for j in range(nb):
                        Md[i, j] = -regj[jout[i * jst + j]]
                    Md[i, i] += inv_hg
                if not lu_factor_dense(Md, piv):
                    nsing += 1
                    if nsing >= MAX_SINGULAR:
                        status = STATUS_SINGULAR
                        break
                    h *= 0.5
                    reject = True
                    continue
            nsteps += 1
            ih = 1.0 / h
            # ---- stages (the scheme in the module docstring, written out per stage;
            # one call site each for the rhs and the linear solve keeps the code small)
            for st in range(8):
                kst = Ks[st]
                if st == 0:
                    hd = h * D1
                    for i in range(n):
                        kst[i] = f0[i] + hd * dT[i]
                else:
                    if st == 1:
                        for i in range(n):
                            regf[1 + i] = y[i] + A21 * k1[i]
                        regf[0] = t + CC2 * h
                    elif st == 2:
                        for i in range(n):
                            regf[1 + i] = y[i] + A31 * k1[i] + A32 * k2[i]
                        regf[0] = t + CC3 * h
                    elif st == 3:
                        for i in range(n):
                            regf[1 + i] = y[i] + A41 * k1[i] + A42 * k2[i] + A43 * k3[i]
                        regf[0] = t + CC4 * h
                    elif st == 4:
                        for i in range(n):
                            regf[1 + i] = (y[i] + A51 * k1[i] + A52 * k2[i] + A53 * k3[i]
                                           + A54 * k4[i])
                        regf[0] = t + CC5 * h
                    elif st == 5:
                        for i in range(n):
                            regf[1 + i] = (y[i] + A61 * k1[i] + A62 * k2[i] + A63 * k3[i]
                                           + A64 * k4[i] + A65 * k5[i])
                        regf[0] = t + h
                    elif st == 6:
                        for i in range(n):
                            regf[1 + i] += k6[i]
                    else:
                        for i in range(n):
                            regf[1 + i] += k7[i]
                    run_tape(ufprog, regf, f_k0, f_k1)
                    tape_outputs(ufprog, regf, fo if products else du)
                    if products:
                        sensitivity_rhs(fo, regf, du, nb, nk, j_out, j_reg, j_guard, g_out)
                    if st == 1:
                        hd = h * D2
                        for i in range(n):
                            kst[i] = du[i] + hd * dT[i] + ih * (C21 * k1[i])
                    elif st == 2:
                        hd = h * D3
                        for i in range(n):
                            kst[i] = (du[i] + hd * dT[i]
                                      + ih * (C31 * k1[i] + C32 * k2[i]))
                    elif st == 3:
                        hd = h * D4
                        for i in range(n):
                            kst[i] = (du[i] + hd * dT[i]
                                      + ih * (C41 * k1[i] + C42 * k2[i] + C43 * k3[i]))
                    elif st == 4:
                        hd = h * D5
                        for i in range(n):
                            kst[i] = (du[i] + hd * dT[i]
                                      + ih * (C51 * k1[i] + C52 * k2[i] + C53 * k3[i]
                                              + C54 * k4[i]))
                    elif st == 5:
                        for i in range(n):
                            kst[i] = du[i] + ih * (
                                C61 * k1[i] + C62 * k2[i] + C63 * k3[i] + C64 * k4[i]
                                + C65 * k5[i])
                    elif st == 6:
                        for i in range(n):
                            kst[i] = du[i] + ih * (
                                C71 * k1[i] + C72 * k2[i] + C73 * k3[i] + C74 * k4[i]
                                + C75 * k5[i] + C76 * k6[i])
                    else:
                        for i in range(n):
                            kst[i] = du[i] + ih * (
                                C81 * k1[i] + C82 * k2[i] + C83 * k3[i] + C84 * k4[i]
                                + C85 * k5[i] + C86 * k6[i] + C87 * k7[i])
                if blocked:
                    _block_solve(kst, nb, nk, sparse, Lr, Lc, Lv, dinv, Ur, Uc, Uv, Md, piv, c_row, c_col, cv, zb)
                elif sparse:
                    _sparse_solve(n, Lr, Lc, Lv, dinv, Ur, Uc, Uv, kst)
                else:
                    lu_solve_dense(Md, piv, kst)
            nfev += 7

            # ---- error estimate; regf[1:] still holds u_7
            # the larger of the state's root-mean-square scaled error and the sensitivities'
            # (theirs weighed by sens_weight), as CVODES with errconS: the state's own norm is
            # that of a run without sensitivities, not diluted by theirs
            s2 = 0.0
            s2s = 0.0
            for i in range(n):
                y1[i] = regf[1 + i] + k8[i]
                sk = sk_atol[i] + rtol * max(abs(y[i]), abs(y1[i]))
                v = k8[i] / sk
                if i < nb:
                    s2 += v * v
                else:
                    s2s += v * v
                if not math.isfinite(y1[i]):
                    s2 = math.inf
            err = math.sqrt(s2 / nb)
            if n > nb:
                err = max(err, sens_weight * math.sqrt(s2s / (n - nb)))
            if not (err <= 1e300):  # nan or inf: reject hard
                last_nonfinite = True
                reject = True
                h *= 0.2
                continue
            last_nonfinite = False
            err_e = err ** EXPO
            fac = max(FACMIN, min(FACMAX, err_e / SAFE))
            hnew = h / fac
            if err <= 1.0:
                # ---- accept
                if naccept > 0:
                    # Gustafsson: (hacc/h) * (err**2/erracc)**EXPO / SAFE, with one pow
                    facgus = (hacc / h) * (err_e * err_e / erracc_e) / SAFE
                    facgus = max(FACMIN, min(FACMAX, facgus))
                    fac = max(fac, facgus)
                    hnew = h / fac
                hacc = h
                erracc_e = max(_ERRMIN_E, err_e)
                naccept += 1
                nsing = 0
                t_old = t
                t = target if last else t + h
                if sides is not None:
                    _set_inputs(regg, t, y1)
                    run_tape(ugprog, regg, gprog[H_NFIXED], gprog[H_NINSTR])
                    tape_outputs(ugprog, regg, gval)
                    crossed = False
                    for j in range(n_watch):
                        if (gval[j] > 0.0 and sides[j] < 0.0) or (gval[j] < 0.0 and sides[j] > 0.0):
                            crossed = True   # (0 and nan are on no side: never a crossing)
                    if crossed:
                        crossing_t[0] = t_old
                        crossing_t[1] = t
                        crossing_t[2] = 1.0
                        for i in range(n):
                            crossing_y[0, i] = y[i]
                            crossing_y[1, i] = y1[i]
                            for st in range(8):
                                crossing_y[2 + st, i] = K[st, i]
                        break
                # dense output for every output time in (t_old, t]
                while iout < nt and times[iout] <= t:
                    to = times[iout]
                    if to == t:
                        for i in range(n):
                            Y[iout, i] = y1[i]
                    else:
                        _dense_output((to - t_old) / h, y, y1, K, Y[iout])
                    iout += 1
                for i in range(n):
                    y[i] = y1[i]
                if iout >= nt:
                    break
                if not products:    # (with products: with the Jacobian, above)
                    _set_inputs(regf, t, y)
                    run_tape(ufprog, regf, f_k0, f_k1)
                    tape_outputs(ufprog, regf, f0)
                    nfev += 1
                    if not _all_finite(f0):
                        status = STATUS_NONFINITE
                        break
                need_jac = True
                if reject:
                    hnew = min(hnew, h)
                reject = False
                h = hnew
            else:
                # ---- reject
                if naccept == 0 and nsteps == 1:
                    hnew = 0.1 * h
                reject = True
                h = hnew
        return Y, status, nsteps, nfev

    core.__name__ = name
    core.__qualname__ = f"_make_solver.<locals>.{name}"
    return _jit(core)


# Two kernels of the same code, each compiled on its first use: integrate's (sides None: numba
# removes the watching code) and integrate_watching's (models with triggered events). Before,
# integrate called a second kernel that called the watching one: every integration compiled
# both, and numba links every callee's LLVM module into its caller and optimizes and generates
# the machine code of the whole again (~4 s more).
if numba_available():
    _solve = _make_solver(tape_source_hash(), "solve")
    _solve_watching = _make_solver(tape_source_hash(), "solve_watching")
else:  # pragma: no cover
    _solve = _solve_watching = None

EMPTY_PROGRAM = np.zeros(HEADER, dtype=np.int64)
EMPTY_ARRAY = np.zeros(0, dtype=np.float64)
NO_PRODUCTS = np.zeros(0, dtype=np.int64)
_NO_CROSSING_T = np.zeros(3)
_NO_CROSSING_Y = np.zeros((10, 1))   # (unused when nothing is watched; any n)


# --------------------------------------------------------------------------- Python API


def integrate(rhs, jac, y0, params, t0: float, times, rtol: float, atol,
              max_steps: int = 100000, first_step: float = 0.0, *, dfdt=None,
              dense_output: bool = True, n_base: int | None = None,
              sensitivity_tolerance: float = SENSITIVITY_TOLERANCE, products=None):
    """Integrate ``dy/dt = f(t, y, p)`` from ``(t0, y0)`` and return the state at ``times``.

    ``rhs``, ``jac`` (and optional ``dfdt``) are tapes with inputs ``[t, y_0..y_{n-1},
    p_0..p_{m-1}]`` (see :func:`kinetics.codegen.tape.build_tapes`); ``rhs`` and ``dfdt`` have n
    outputs, ``jac`` n*n (row-major, ``d f_i/d y_j`` at ``i*n + j``; outputs that are the constant 0 define
    its sparsity). ``times``: ascending, all >= ``t0``; a time equal to ``t0`` returns ``y0``.
    ``rtol`` >= 0; ``atol`` > 0, a scalar or one value per state. ``max_steps`` bounds the
    attempted steps; ``first_step`` (> 0) overrides the initial-step heuristic. ``dfdt``:
    tape of df/dt for a right-hand side that reads t (else a finite difference is used).
    ``dense_output``: interpolate the output times (default) or shorten steps to hit them;
    for exo_sat at rtol 1e-8 the first takes 150 steps (max. rel. error 8e-9), the second
    160 (1e-9): faster at equal tolerance, slower at equal accuracy.
    ``n_base``: the system is a state of ``n_base`` values followed by its sensitivities
    (see "Forward sensitivities" in the module docstring): its iteration matrix is solved by
    block substitution with one factorization of the state's block; ValueError if the
    Jacobian's pattern is not of that form. None: one factorization of the whole matrix.
    ``sensitivity_tolerance``: with ``n_base``, the sensitivities enter the error norm with
    ``rtol`` and ``atol`` multiplied by this factor (>= 1; inf: not at all, the steps are the
    state's alone; see "Forward sensitivities" in the module docstring).
    ``products``: with ``n_base``, a plan from :func:`product_plan`; ``rhs`` then gives f, the
    state's Jacobian entries and F_p D entries instead of the augmented right-hand side, and
    the integrator forms J S + F_p D itself (``jac`` and ``dfdt`` stay the augmented system's).

    Returns ``(Y, status, n_steps, n_rhs)``: ``Y`` of shape ``(len(times), n)`` (nan rows
    where a failed integration did not reach), ``status`` 0 for success or one of the
    ``STATUS_*`` codes, ``n_steps`` attempted steps (accepted + rejected), ``n_rhs``
    right-hand-side evaluations. Raises ``ImportError`` without numba and ``ValueError`` for
    inconsistent input.
    """
    if _solve is None:
        raise ImportError("kinetics.numerics.rosenbrock.integrate needs numba; install it with "
                          "`pip install numba` or the `kinetics[fast]` extra")
    from .compile_notice import announce_compilation
    announce_compilation(_solve, "the stiff-integrator")
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    params = np.ascontiguousarray(params, dtype=np.float64)
    times = np.ascontiguousarray(times, dtype=np.float64)
    if y0.ndim != 1 or params.ndim != 1 or times.ndim != 1:
        raise ValueError(f"y0, params and times must be 1-D arrays; got shapes {y0.shape}, "
                         f"{params.shape}, {times.shape}")
    if type(atol) is float:
        atol_s = atol
        atol_v = EMPTY_ARRAY
    elif np.ndim(atol) == 0:
        atol_s = float(atol)
        atol_v = EMPTY_ARRAY
    else:
        atol_s = 0.0
        atol_v = np.ascontiguousarray(atol, dtype=np.float64)
    if dfdt is None:
        tmode = 2 if rhs.uses_input[0] else 0
        dprog = EMPTY_PROGRAM
        dconsts = EMPTY_ARRAY
    else:
        tmode = 1
        dprog = dfdt.prog
        dconsts = dfdt.consts
    splan = NO_PRODUCTS if products is None else np.ascontiguousarray(products, dtype=np.int64)
    if products is not None:
        if n_base is None or not 0 < n_base < y0.shape[0]:
            raise ValueError("products need a state-and-sensitivities system: n_base smaller than the number "
                             f"of values ({y0.shape[0]}), got {n_base}")
        plan = state_block_lu_plan(jac, int(n_base))
    elif n_base is not None and n_base != y0.shape[0]:
        plan = block_lu_plan(jac, y0.shape[0], int(n_base))
    else:
        n_base = 0
        plan = jac.aux.get("lu_plan")
        if plan is None or plan[0] != y0.shape[0]:
            plan = lu_plan(jac, y0.shape[0])
    Y, status, n_steps, n_rhs = _solve(rhs.prog, rhs.consts, jac.prog, jac.consts, dprog,
                                       dconsts, tmode, plan, y0, params, float(t0), times,
                                       float(rtol), atol_s, atol_v, int(max_steps),
                                       float(first_step), bool(dense_output), int(n_base),
                                       1.0 / float(sensitivity_tolerance), splan, EMPTY_PROGRAM,
                                       EMPTY_ARRAY, None, _NO_CROSSING_T, _NO_CROSSING_Y)
    if status == STATUS_BAD_INPUT:
        raise ValueError(explain_bad_input(rhs, jac, dfdt, y0, params, t0, times, rtol,
                                            atol_s, atol_v, splan, int(n_base)))
    return Y, status, n_steps, n_rhs


def integrate_watching(rhs, jac, y0, params, t0: float, times, rtol: float, atol: float, watch, sides,
                       max_steps: int = 100000, *, dfdt=None):
    """:func:`integrate` that also watches the outputs g of the tape ``watch`` (inputs as
    ``rhs``'s) and stops after the first accepted step at whose end some g_j is nonzero and on
    the other side than ``sides[j]`` (+1 or -1). Returns ``(Y, status, crossing)``: ``Y`` as
    from :func:`integrate` for the output times reached (nan after the stop), and ``crossing``
    None or ``(t_old, t_new, y_old, y_new, K)``: the step over which the sign changed, whose
    interpolant :func:`dense_state` gives y in between (for locating the root)."""
    if _solve_watching is None:
        raise ImportError("kinetics.numerics.rosenbrock.integrate_watching needs numba")
    from .compile_notice import announce_compilation
    announce_compilation(_solve_watching, "the stiff-integrator")
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    params = np.ascontiguousarray(params, dtype=np.float64)
    times = np.ascontiguousarray(times, dtype=np.float64)
    sides = np.ascontiguousarray(sides, dtype=np.float64)
    if dfdt is None:
        tmode, dprog, dconsts = (2 if rhs.uses_input[0] else 0), EMPTY_PROGRAM, EMPTY_ARRAY
    else:
        tmode, dprog, dconsts = 1, dfdt.prog, dfdt.consts
    plan = jac.aux.get("lu_plan")
    if plan is None or plan[0] != y0.shape[0]:
        plan = lu_plan(jac, y0.shape[0])
    crossing_t = np.zeros(3)
    crossing_y = np.zeros((10, y0.shape[0]))
    Y, status, _, _ = _solve_watching(rhs.prog, rhs.consts, jac.prog, jac.consts, dprog, dconsts, tmode, plan, y0,
                                      params, float(t0), times, float(rtol), float(atol), EMPTY_ARRAY, int(max_steps),
                                      0.0, True, 0, 1.0, NO_PRODUCTS, watch.prog, watch.consts, sides, crossing_t,
                                      crossing_y)
    if status == STATUS_BAD_INPUT:
        if watch.n_inputs != rhs.n_inputs or watch.n_outputs != len(sides):
            raise ValueError(f"the watch tape has {watch.n_inputs} inputs and {watch.n_outputs} outputs; expected "
                             f"{rhs.n_inputs} inputs (as the rhs) and {len(sides)} outputs (one per side)")
        raise ValueError(explain_bad_input(rhs, jac, dfdt, y0, params, t0, times, rtol, float(atol), EMPTY_ARRAY))
    if crossing_t[2] == 0:
        return Y, status, None
    return Y, status, (float(crossing_t[0]), float(crossing_t[1]), crossing_y[0].copy(), crossing_y[1].copy(),
                       crossing_y[2:].copy())


def dense_state(t, t_old, t_new, y_old, y_new, K) -> np.ndarray:
    """The Rodas5P interpolant of one step (t_old -> t_new with stages K (8, n)) at time t."""
    theta = (t - t_old) / (t_new - t_old)
    q1, q2, q3 = TH @ K
    return (1.0 - theta) * y_old + theta * (y_new + (1.0 - theta) * (q1 + theta * (q2 + theta * q3)))


def explain_bad_input(rhs, jac, dfdt, y0, params, t0, times, rtol, atol_s, atol_v, products=NO_PRODUCTS,
                      n_base=0) -> str:
    n, m = y0.shape[0] if y0.ndim == 1 else -1, params.shape[0] if params.ndim == 1 else -1
    n_in = 1 + n + m
    if y0.ndim != 1 or n == 0:
        return f"y0 must be a non-empty 1-D array, got shape {y0.shape}"
    n_rhs = n
    if products.shape[0]:     # (integrate has checked 0 < n_base < n)
        n_k = (n - n_base) // n_base
        if not valid_products(products, n_base, n_k, rhs.n_outputs, jac.n_outputs):
            return (f"the products plan does not fit {n_base} states, {n_k} directions, the rhs tape's "
                    f"{rhs.n_outputs} outputs and the jac tape's {jac.n_outputs} (see product_plan)")
        if dfdt is None and rhs.uses_input[0]:
            return "a products rhs tape that reads t needs a dfdt tape (sensitivity_tapes makes one)"
        n_rhs, n_jac = rhs.n_outputs, jac.n_outputs
    else:
        n_jac = n * n
    for name, tp, n_out in (("rhs", rhs, n_rhs), ("jac", jac, n_jac), ("dfdt", dfdt, n)):
        if tp is None:
            continue
        if tp.n_inputs != n_in:
            return (f"{name} tape has {tp.n_inputs} inputs, expected 1 + {n} states + {m} "
                    f"parameters = {n_in}")
        if tp.n_outputs != n_out:
            return f"{name} tape has {tp.n_outputs} outputs, expected {n_out}"
    if atol_v.shape[0] not in (0, n):
        return f"atol has {atol_v.shape[0]} values for {n} states"
    if atol_v.shape[0] and not np.all((atol_v > 0) & np.isfinite(atol_v)):
        return "atol must be positive and finite"
    if not atol_v.shape[0] and not (0 < atol_s < np.inf):
        return f"atol must be positive and finite, got {atol_s}"
    if not 0 <= rtol < np.inf:
        return f"rtol must be finite and >= 0, got {rtol}"
    if not np.isfinite(t0):
        return f"t0 must be finite, got {t0}"
    if times.ndim != 1 or not np.all(np.isfinite(times)):
        return "times must be a 1-D array of finite values"
    if np.any(times < t0):
        return f"times must be >= t0 = {t0}; got {times.min()}"
    return "times must be sorted ascending"
