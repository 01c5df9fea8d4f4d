"""The compiled Rodas5P integrator of :mod:`kinetics.numerics.rosenbrock` for many problems at
once (ensembles): :func:`integrate_many`.

Why lanes
    One integration of a small model (exo_sat: 6 states, ~150 steps) costs ~100 µs, and most of
    each step is not arithmetic: the tape interpreter decodes every instruction (a branch over
    the opcodes) for a dozen floating-point operations, and the linear algebra of n = 6 is
    loop set-up more than work. Here a worker advances a block of ``LANES`` problems in lock
    step, one register file per lane (:func:`kinetics.numerics.tape_machine.run_tape_lanes`):
    every instruction, LU operation and stage update is decoded once and applied to all lanes
    in an inner loop over contiguous memory that the compiler turns into vector instructions.

Same integrator, same numbers
    Every lane runs :mod:`kinetics.numerics.rosenbrock`'s algorithm with its own state: step
    size, error control, accepted and rejected steps, Jacobian updates, dense output, status.
    Lanes never exchange values; a lane whose problem is finished (or failed) takes the next
    problem of its worker's share. Per lane the operations are the scalar integrator's in the
    same order (no fused or reassociated arithmetic), so the results equal
    :func:`kinetics.numerics.rosenbrock.integrate`'s to the last bit (tested). Work that the
    scalar code skips for a lane (a Jacobian at an unchanged point after a rejected step, the
    right-hand side at an unchanged point) is recomputed for all lanes at once: evaluated at
    the same inputs it gives the same values, so only its cost is shared.

    Rare per-lane branches run as scalar code on that lane: the initial-step heuristic, a
    pivot that fails the sparse LU's threshold test (dense LU with partial pivoting for that
    lane), a finite-difference df/dt.

Parallelism
    The problems are cut into chunks of at least ``CHUNK``; chunks run in parallel on the cores
    (threads: :func:`kinetics.numerics.jit.run_chunks`; the kernel releases the GIL), each chunk
    in lock-step blocks of ``LANES``.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from .jit import jit, numba_available, run_chunks
from .rosenbrock import (A21, A31, A32, A41, A42, A43, A51, A52, A53, A54, A61, A62, A63, A64, A65, C21, C31,
                         C32, C41, C42, C43, C51, C52, C53, C54, C61, C62, C63, C64, C65, C71, C72, C73, C74,
                         C75, C76, C81, C82, C83, C84, C85, C86, C87, CC2, CC3, CC4, CC5, D1, D2, D3, D4, D5,
                         EMPTY_ARRAY, EMPTY_PROGRAM, EPS, EXPO, FACMAX, FACMIN, GAMMA, MAX_SINGULAR, P_FPOS,
                         P_LC, P_LPOS, P_LR, P_NL, P_NOPS, P_NPAT, P_NU, P_OPS, P_UC, P_UPOS, P_UR,
                         PIVOT_THRESHOLD, SAFE, STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK,
                         STATUS_SINGULAR, STATUS_STEP_UNDERFLOW, TH, explain_bad_input, initial_step,
                         initial_step_guess, lu_factor_dense, lu_plan, lu_solve_dense, valid_arguments)
from .tape_machine import H_NCONST, H_NFIXED, H_NIN, H_NINSTR, HEADER, run_tape_lanes, tape_outputs_lanes

__all__ = ["integrate_many", "LANES", "CHUNK"]

#: Problems advanced in lock step by one worker. 32 lanes of float64 fill four AVX-512 (eight
#: AVX2) registers per operation, and the register files of a small model stay in L1 cache.
LANES = 32

#: Problems per parallel task (a worker's share is taken in lock-step blocks of LANES; a chunk's
#: last problems run with idle lanes, so chunks are long).
CHUNK = 512

_ERRMIN_E = 1e-2 ** EXPO   # as rosenbrock: max(1e-2, err of the last accepted step) ** EXPO


def _dependency_hash() -> int:
    """A 63-bit hash of the integrator and tape machine sources: the kernels below close over it,
    so numba's disk cache (keyed on this file only) is invalidated when either changes."""
    here = Path(__file__).parent
    digest = hashlib.sha256((here / "rosenbrock.py").read_bytes() + (here / "tape_machine.py").read_bytes())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


# Helpers without calls into the tape machine live at module level (numba keys a cached function on
# its own file and on its closure's values: a closure over other kernels would be a new key in every
# process, i.e. never cached); everything that calls the tape machine is inside _make_kernels.

@jit
def _set_inputs(R, t, y, l0, l1):
    """Inputs [t, y] of lanes l0..l1-1 of register block R from t (lanes,) and y (n, lanes)."""
    for l in range(l0, l1):
        R[0, l] = t[l]
    for i in range(y.shape[0]):
        for l in range(l0, l1):
            R[1 + i, l] = y[i, l]


@jit
def _load_lane(R, n_in, consts, params, n, l):
    """Lane l of register block R: zeros, then the constants and the parameters in place."""
    for i in range(R.shape[0]):
        R[i, l] = 0.0
    for i in range(consts.shape[0]):
        R[n_in + i, l] = consts[i]
    for i in range(params.shape[0]):
        R[1 + n + i, l] = params[i]


def _make_kernels(dependency_hash):
    """Build the lock-step integrator (closures over ``dependency_hash``, see
    :func:`_dependency_hash`)."""

    @jit
    def lanes_solve(fprog, fconsts, jprog, jconsts, dprog, dconsts, tmode, plan, Y0, P, t0, times, rtol,
                    atol_s, max_steps, first, last_set, B, out, status):
        """Integrate problems first..last_set-1 (rows of Y0, P) in lock-step blocks of B lanes
        into out[s] (len(times), n) and status[s]; rosenbrock's solver per lane, dense output,
        scalar atol. Returns the number of attempted steps."""
        if dependency_hash == -1:
            rtol = rtol + 0.0
        n = Y0.shape[1]
        nt = times.shape[0]
        L = B
        atol_v = np.zeros(0)
        ufprog = fprog.view(np.uint64)
        ujprog = jprog.view(np.uint64)
        udprog = dprog.view(np.uint64)
        f_k0 = fprog[H_NFIXED]
        f_k1 = fprog[H_NINSTR]
        j_k0 = jprog[H_NFIXED]
        j_k1 = jprog[H_NINSTR]
        d_k0 = dprog[H_NFIXED]
        d_k1 = dprog[H_NINSTR]
        jo = HEADER + 4 * j_k1
        Rf = np.zeros((fprog[H_NIN] + fprog[H_NCONST] + fprog[H_NINSTR], L))
        Rj = np.zeros((jprog[H_NIN] + jprog[H_NCONST] + jprog[H_NINSTR], L))
        Rd = np.zeros((dprog[H_NIN] + dprog[H_NCONST] + dprog[H_NINSTR] if tmode == 1 else 1, L))
        tend = times[nt - 1]
        cbrt_eps = 6.055454452393343e-06

        # the sparse-LU plan as unsigned index arrays (see rosenbrock._make_lu_plan)
        uplan = plan.view(np.uint64)
        n_pat = plan[P_NPAT]
        n_l = plan[P_NL]
        n_u = plan[P_NU]
        Lr = uplan[plan[P_LR]:plan[P_LR] + n_l]
        Lc = uplan[plan[P_LC]:plan[P_LC] + n_l]
        Ur = uplan[plan[P_UR]:plan[P_UR] + n_u]
        Uc = uplan[plan[P_UC]:plan[P_UC] + n_u]
        fpos = uplan[plan[P_FPOS]:plan[P_FPOS] + n_pat]
        lpos = uplan[plan[P_LPOS]:plan[P_LPOS] + n_l]
        upos = uplan[plan[P_UPOS]:plan[P_UPOS] + n_u]
        lu_ops = uplan[plan[P_OPS]:plan[P_OPS] + 3 * plan[P_NOPS]]
        jout = ujprog[jo:jo + n * n]

        # per-lane state
        lane_set = np.full(L, -1, dtype=np.int64)
        t = np.zeros(L)
        h = np.zeros(L)
        hacc = np.zeros(L)
        erracc_e = np.ones(L)
        target = np.zeros(L)
        inv_hg = np.zeros(L)
        ih = np.zeros(L)
        hd = np.zeros(L)
        s2 = np.zeros(L)
        amax = np.zeros(L)
        lmul = np.zeros(L)
        iout = np.zeros(L, dtype=np.int64)
        nsteps = np.zeros(L, dtype=np.int64)
        naccept = np.zeros(L, dtype=np.int64)
        nsing = np.zeros(L, dtype=np.int64)
        reject = np.zeros(L, dtype=np.bool_)
        last_nonfinite = np.zeros(L, dtype=np.bool_)
        need_jac = np.zeros(L, dtype=np.bool_)
        last = np.zeros(L, dtype=np.bool_)
        go = np.zeros(L, dtype=np.bool_)          # the lane attempts a step in this round
        accepted = np.zeros(L, dtype=np.bool_)
        done = np.zeros(L, dtype=np.bool_)        # the lane's problem is finished (status set)
        sparse_ok = np.ones(L, dtype=np.bool_)
        y = np.zeros((n, L))
        y1 = np.zeros((n, L))
        f0 = np.zeros((n, L))
        du = np.zeros((n, L))
        dT = np.zeros((n, L))
        K = np.zeros((8, n, L))
        M = np.zeros((n * n, L))
        dinv = np.zeros((n, L))
        Lv = np.zeros((max(n_l, 1), L))
        Uv = np.zeros((max(n_u, 1), L))
        Md = np.zeros((L, n, n))                  # dense factors of lanes whose sparse LU failed
        piv = np.zeros((L, n), dtype=np.int64)
        ycol = np.zeros(n)
        fcol = np.zeros(n)
        facol = np.zeros(n)
        bcol = np.zeros(n)
        tcol = np.zeros(L)
        ycols = np.zeros((n, L))
        fa = np.zeros((n, L))
        fb = np.zeros((n, L))

        next_set = first
        active = 0
        total_steps = 0
        # ------------------------------------------------------------------ lanes take problems
        for l in range(L):
            lane_set[l] = -1
        while True:
            # fill idle lanes (a problem finished at its start is finished here too)
            for l in range(L):
                while lane_set[l] < 0 and next_set < last_set:
                    s = next_set
                    next_set += 1
                    for k in range(nt):
                        for i in range(n):
                            out[s, k, i] = math.nan
                    k = 0
                    while k < nt and times[k] == t0:
                        for i in range(n):
                            out[s, k, i] = Y0[s, i]
                        k += 1
                    if k == nt:
                        status[s] = STATUS_OK
                        continue
                    # constants, parameters, then each tape's parameter-only prologue
                    _load_lane(Rf, fprog[H_NIN], fconsts, P[s], n, l)
                    run_tape_lanes(ufprog, Rf, np.int64(0), f_k0, l, l + 1)
                    _load_lane(Rj, jprog[H_NIN], jconsts, P[s], n, l)
                    run_tape_lanes(ujprog, Rj, np.int64(0), j_k0, l, l + 1)
                    if tmode == 1:
                        _load_lane(Rd, dprog[H_NIN], dconsts, P[s], n, l)
                        run_tape_lanes(udprog, Rd, np.int64(0), d_k0, l, l + 1)
                    for i in range(n):
                        y[i, l] = Y0[s, i]
                    t[l] = t0
                    _set_inputs(Rf, t, y, l, l + 1)
                    run_tape_lanes(ufprog, Rf, f_k0, f_k1, l, l + 1)
                    tape_outputs_lanes(ufprog, Rf, f0, l, l + 1)
                    finite = True
                    for i in range(n):
                        ycol[i] = y[i, l]
                        fcol[i] = f0[i, l]
                        if not math.isfinite(f0[i, l]):
                            finite = False
                    if not finite:
                        status[s] = STATUS_NONFINITE
                        continue
                    # Hairer's initial step (HW I, II.4), as rosenbrock: one rhs at t + h0
                    h0 = initial_step_guess(ycol, fcol, rtol, atol_s, atol_v, tend - t0)
                    for i in range(n):
                        fb[i, l] = ycol[i] + h0 * fcol[i]
                    tcol[l] = t0 + h0
                    _set_inputs(Rf, tcol, fb, l, l + 1)
                    run_tape_lanes(ufprog, Rf, f_k0, f_k1, l, l + 1)
                    tape_outputs_lanes(ufprog, Rf, fa, l, l + 1)
                    for i in range(n):
                        facol[i] = fa[i, l]
                    hl = initial_step(ycol, fcol, facol, h0, rtol, atol_s, atol_v)
                    h[l] = min(hl, tend - t0)
                    lane_set[l] = s
                    iout[l] = k
                    nsteps[l] = 0
                    naccept[l] = 0
                    nsing[l] = 0
                    reject[l] = False
                    last_nonfinite[l] = False
                    need_jac[l] = True
                    hacc[l] = 0.0
                    erracc_e[l] = 1.0
                    done[l] = False
            active = 0
            for l in range(L):
                if lane_set[l] >= 0:
                    active += 1
            if active == 0:
                break

            # ---------------------------------------------------------- choose the step
            any_jac = False
            for l in range(L):
                go[l] = False
                accepted[l] = False
                if lane_set[l] < 0:
                    continue
                target[l] = tend
                last[l] = False
                if t[l] + 1.0001 * h[l] >= target[l]:
                    h[l] = target[l] - t[l]
                    last[l] = True
                if 0.1 * abs(h[l]) <= abs(t[l]) * EPS or not (h[l] > 0.0):
                    status[lane_set[l]] = STATUS_NONFINITE if last_nonfinite[l] else STATUS_STEP_UNDERFLOW
                    done[l] = True
                    continue
                if nsteps[l] >= max_steps:
                    status[lane_set[l]] = STATUS_MAX_STEPS
                    done[l] = True
                    continue
                go[l] = True
                if need_jac[l]:
                    any_jac = True

            # ---------------------------------------------------------- Jacobian (and df/dt)
            # for every lane at its own (t, y): lanes that keep theirs get the same values again
            if any_jac:
                _set_inputs(Rj, t, y, 0, L)
                run_tape_lanes(ujprog, Rj, j_k0, j_k1, 0, L)
                if tmode == 1:
                    _set_inputs(Rd, t, y, 0, L)
                    run_tape_lanes(udprog, Rd, d_k0, d_k1, 0, L)
                    tape_outputs_lanes(udprog, Rd, dT, 0, L)
                for l in range(L):
                    if not (go[l] and need_jac[l]):
                        continue
                    for q in range(n_pat):
                        if not math.isfinite(Rj[jout[fpos[q]], l]):
                            status[lane_set[l]] = STATUS_NONFINITE
                            done[l] = True
                            go[l] = False
                            break
                    if not go[l]:
                        continue
                    if tmode == 2:
                        # central difference, as rosenbrock (step scaled by h, above t's spacing)
                        delta = cbrt_eps * max(h[l], cbrt_eps * abs(t[l]))
                        tp = t[l] + delta
                        tm = t[l] - delta
                        tcol[l] = tp
                        _set_inputs(Rf, tcol, y, l, l + 1)
                        run_tape_lanes(ufprog, Rf, f_k0, f_k1, l, l + 1)
                        tape_outputs_lanes(ufprog, Rf, fa, l, l + 1)
                        tcol[l] = tm
                        _set_inputs(Rf, tcol, y, l, l + 1)
                        run_tape_lanes(ufprog, Rf, f_k0, f_k1, l, l + 1)
                        tape_outputs_lanes(ufprog, Rf, fb, l, l + 1)
                        for i in range(n):
                            dT[i, l] = (fa[i, l] - fb[i, l]) / (tp - tm)
                    need_jac[l] = False

            # ---------------------------------------------------------- I/(h gamma) - J, sparse LU
            for l in range(L):
                inv_hg[l] = 1.0 / (h[l] * GAMMA)
            for q in range(n_pat):
                pos = fpos[q]
                jr = jout[pos]
                for l in range(L):
                    M[pos, l] = -Rj[jr, l]
            for i in range(n):
                for l in range(L):
                    M[i * n + i, l] += inv_hg[l]
            for l in range(L):
                amax[l] = 0.0
                lmul[l] = 0.0
                sparse_ok[l] = True
            for q in range(0, lu_ops.shape[0], 3):
                code = np.int64(lu_ops[q])
                a = lu_ops[q + 1]
                b = lu_ops[q + 2]
                if code == 3:
                    for l in range(L):
                        M[a, l] -= lmul[l] * M[b, l]
                elif code == 2:
                    for l in range(L):
                        v = M[a, l] * dinv[b, l]
                        lmul[l] = v
                        M[a, l] = v
                elif code == 0:
                    for l in range(L):
                        v = abs(M[a, l])
                        if v > amax[l]:
                            amax[l] = v
                else:
                    for l in range(L):
                        pv = M[b, l]
                        apiv = abs(pv)
                        if not (apiv >= PIVOT_THRESHOLD * amax[l] and apiv > 0.0 and apiv < math.inf):
                            sparse_ok[l] = False
                        dinv[a, l] = 1.0 / pv
                        amax[l] = 0.0
            for q in range(n_l):
                pos = lpos[q]
                for l in range(L):
                    Lv[q, l] = M[pos, l]
            for q in range(n_u):
                pos = upos[q]
                r = Ur[q]
                for l in range(L):
                    Uv[q, l] = M[pos, l] * dinv[r, l]
            any_dense = False
            for l in range(L):
                if not go[l] or sparse_ok[l]:
                    continue
                # a pivot failed the threshold test: dense LU with partial pivoting for this lane
                Ml = Md[l]
                for i in range(n):
                    for j in range(n):
                        Ml[i, j] = -Rj[jprog[jo + i * n + j], l]
                    Ml[i, i] += inv_hg[l]
                if lu_factor_dense(Ml, piv[l]):
                    any_dense = True
                else:
                    nsing[l] += 1
                    go[l] = False
                    if nsing[l] >= MAX_SINGULAR:
                        status[lane_set[l]] = STATUS_SINGULAR
                        done[l] = True
                    else:
                        h[l] *= 0.5
                        reject[l] = True

            for l in range(L):
                if go[l]:
                    nsteps[l] += 1
                    total_steps += 1
                ih[l] = 1.0 / h[l]

            # ---------------------------------------------------------- the eight stages
            for st in range(8):
                if st == 0:
                    for l in range(L):
                        hd[l] = h[l] * D1
                    for i in range(n):
                        for l in range(L):
                            K[0, i, l] = f0[i, l] + hd[l] * dT[i, l]
                else:
                    if st == 1:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] = y[i, l] + A21 * K[0, i, l]
                        for l in range(L):
                            Rf[0, l] = t[l] + CC2 * h[l]
                    elif st == 2:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] = y[i, l] + A31 * K[0, i, l] + A32 * K[1, i, l]
                        for l in range(L):
                            Rf[0, l] = t[l] + CC3 * h[l]
                    elif st == 3:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] = y[i, l] + A41 * K[0, i, l] + A42 * K[1, i, l] + A43 * K[2, i, l]
                        for l in range(L):
                            Rf[0, l] = t[l] + CC4 * h[l]
                    elif st == 4:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] = (y[i, l] + A51 * K[0, i, l] + A52 * K[1, i, l] + A53 * K[2, i, l]
                                                + A54 * K[3, i, l])
                        for l in range(L):
                            Rf[0, l] = t[l] + CC5 * h[l]
                    elif st == 5:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] = (y[i, l] + A61 * K[0, i, l] + A62 * K[1, i, l] + A63 * K[2, i, l]
                                                + A64 * K[3, i, l] + A65 * K[4, i, l])
                        for l in range(L):
                            Rf[0, l] = t[l] + h[l]
                    elif st == 6:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] += K[5, i, l]
                    else:
                        for i in range(n):
                            for l in range(L):
                                Rf[1 + i, l] += K[6, i, l]
                    run_tape_lanes(ufprog, Rf, f_k0, f_k1, 0, L)
                    tape_outputs_lanes(ufprog, Rf, du, 0, L)
                    if st == 1:
                        for l in range(L):
                            hd[l] = h[l] * D2
                        for i in range(n):
                            for l in range(L):
                                K[1, i, l] = du[i, l] + hd[l] * dT[i, l] + ih[l] * (C21 * K[0, i, l])
                    elif st == 2:
                        for l in range(L):
                            hd[l] = h[l] * D3
                        for i in range(n):
                            for l in range(L):
                                K[2, i, l] = (du[i, l] + hd[l] * dT[i, l]
                                              + ih[l] * (C31 * K[0, i, l] + C32 * K[1, i, l]))
                    elif st == 3:
                        for l in range(L):
                            hd[l] = h[l] * D4
                        for i in range(n):
                            for l in range(L):
                                K[3, i, l] = (du[i, l] + hd[l] * dT[i, l]
                                              + ih[l] * (C41 * K[0, i, l] + C42 * K[1, i, l] + C43 * K[2, i, l]))
                    elif st == 4:
                        for l in range(L):
                            hd[l] = h[l] * D5
                        for i in range(n):
                            for l in range(L):
                                K[4, i, l] = (du[i, l] + hd[l] * dT[i, l]
                                              + ih[l] * (C51 * K[0, i, l] + C52 * K[1, i, l] + C53 * K[2, i, l]
                                                         + C54 * K[3, i, l]))
                    elif st == 5:
                        for i in range(n):
                            for l in range(L):
                                K[5, i, l] = du[i, l] + ih[l] * (
                                    C61 * K[0, i, l] + C62 * K[1, i, l] + C63 * K[2, i, l] + C64 * K[3, i, l]
                                    + C65 * K[4, i, l])
                    elif st == 6:
                        for i in range(n):
                            for l in range(L):
                                K[6, i, l] = du[i, l] + ih[l] * (
                                    C71 * K[0, i, l] + C72 * K[1, i, l] + C73 * K[2, i, l] + C74 * K[3, i, l]
                                    + C75 * K[4, i, l] + C76 * K[5, i, l])
                    else:
                        for i in range(n):
                            for l in range(L):
                                K[7, i, l] = du[i, l] + ih[l] * (
                                    C81 * K[0, i, l] + C82 * K[1, i, l] + C83 * K[2, i, l] + C84 * K[3, i, l]
                                    + C85 * K[4, i, l] + C86 * K[5, i, l] + C87 * K[6, i, l])
                # solve (I/(h gamma) - J) k = rhs: sparse factors for every lane, then the
                # dense factors for the lanes whose sparse LU failed (from the saved rhs)
                Ks = K[st]
                if any_dense:
                    for l in range(L):
                        if go[l] and not sparse_ok[l]:
                            for i in range(n):
                                ycols[i, l] = Ks[i, l]
                for q in range(n_l):
                    r = Lr[q]
                    c = Lc[q]
                    for l in range(L):
                        Ks[r, l] -= Lv[q, l] * Ks[c, l]
                for i in range(n):
                    for l in range(L):
                        Ks[i, l] *= dinv[i, l]
                for q in range(n_u):
                    r = Ur[q]
                    c = Uc[q]
                    for l in range(L):
                        Ks[r, l] -= Uv[q, l] * Ks[c, l]
                if any_dense:
                    for l in range(L):
                        if go[l] and not sparse_ok[l]:
                            for i in range(n):
                                bcol[i] = ycols[i, l]
                            lu_solve_dense(Md[l], piv[l], bcol)
                            for i in range(n):
                                Ks[i, l] = bcol[i]

            # ---------------------------------------------------------- error estimate
            # (Rf[1:] still holds u_7)
            for l in range(L):
                s2[l] = 0.0
            for i in range(n):
                for l in range(L):
                    v1 = Rf[1 + i, l] + K[7, i, l]
                    y1[i, l] = v1
                    sk = atol_s + rtol * max(abs(y[i, l]), abs(v1))
                    v = K[7, i, l] / sk
                    s2[l] += v * v
                    if not math.isfinite(v1):
                        s2[l] = math.inf

            # ---------------------------------------------------------- accept or reject, per lane
            any_accepted = False
            for l in range(L):
                if not go[l]:
                    continue
                err = math.sqrt(s2[l] / n)
                if not (err <= 1e300):  # nan or inf: reject hard
                    last_nonfinite[l] = True
                    reject[l] = True
                    h[l] *= 0.2
                    continue
                last_nonfinite[l] = False
                err_e = err ** EXPO
                fac = max(FACMIN, min(FACMAX, err_e / SAFE))
                hnew = h[l] / fac
                if err <= 1.0:
                    if naccept[l] > 0:
                        facgus = (hacc[l] / h[l]) * (err_e * err_e / erracc_e[l]) / SAFE
                        facgus = max(FACMIN, min(FACMAX, facgus))
                        fac = max(fac, facgus)
                        hnew = h[l] / fac
                    hacc[l] = h[l]
                    erracc_e[l] = max(_ERRMIN_E, err_e)
                    naccept[l] += 1
                    nsing[l] = 0
                    t_old = t[l]
                    t[l] = target[l] if last[l] else t[l] + h[l]
                    s = lane_set[l]
                    k = iout[l]
                    while k < nt and times[k] <= t[l]:
                        to = times[k]
                        if to == t[l]:
                            for i in range(n):
                                out[s, k, i] = y1[i, l]
                        else:
                            theta = (to - t_old) / h[l]
                            th1 = 1.0 - theta
                            for i in range(n):
                                q1 = 0.0
                                q2 = 0.0
                                q3 = 0.0
                                for j in range(8):
                                    kj = K[j, i, l]
                                    q1 += TH[0, j] * kj
                                    q2 += TH[1, j] * kj
                                    q3 += TH[2, j] * kj
                                out[s, k, i] = th1 * y[i, l] + theta * (y1[i, l] + th1 * (q1 + theta * (q2 + theta * q3)))
                        k += 1
                    iout[l] = k
                    for i in range(n):
                        y[i, l] = y1[i, l]
                    if k >= nt:
                        status[s] = STATUS_OK
                        done[l] = True
                        continue
                    accepted[l] = True
                    any_accepted = True
                    need_jac[l] = True
                    if reject[l]:
                        hnew = min(hnew, h[l])
                    reject[l] = False
                    h[l] = hnew
                else:
                    if naccept[l] == 0 and nsteps[l] == 1:
                        hnew = 0.1 * h[l]
                    reject[l] = True
                    h[l] = hnew

            # ---------------------------------------------------------- f at the new points
            # (every lane: at an unchanged point the values are the same again)
            if any_accepted:
                _set_inputs(Rf, t, y, 0, L)
                run_tape_lanes(ufprog, Rf, f_k0, f_k1, 0, L)
                tape_outputs_lanes(ufprog, Rf, f0, 0, L)
                for l in range(L):
                    if accepted[l]:
                        for i in range(n):
                            if not math.isfinite(f0[i, l]):
                                status[lane_set[l]] = STATUS_NONFINITE
                                done[l] = True
                                break

            for l in range(L):
                if done[l]:
                    lane_set[l] = -1
                    done[l] = False
        return total_steps

    return lanes_solve


if numba_available():
    _lanes_solve = _make_kernels(_dependency_hash())
else:  # pragma: no cover
    _lanes_solve = None


def integrate_many(rhs, jac, Y0, P, t0: float, times, rtol: float, atol: float, max_steps: int = 100000, *,
                   dfdt=None, lanes: int = LANES, chunk: int = CHUNK):
    """:func:`kinetics.numerics.rosenbrock.integrate` (dense output) for many initial states
    ``Y0`` (N, n) and parameter vectors ``P`` (N, m) at once, with one scalar ``atol``: in
    lock-step blocks of ``lanes`` problems, chunks of at least ``chunk`` problems in parallel
    on the cores. Returns ``(Y (N, len(times), n), status (N,), steps)``: per problem the values and
    status :func:`~kinetics.numerics.rosenbrock.integrate` returns for it (equal to the last
    bit), and the attempted steps of all problems."""
    if _lanes_solve is None:
        raise ImportError("kinetics.numerics.rosenbrock_lanes.integrate_many needs numba; install it with "
                          "`pip install numba` or the `kinetics[fast]` extra")
    Y0 = np.ascontiguousarray(Y0, dtype=np.float64)
    P = np.ascontiguousarray(P, dtype=np.float64)
    times = np.ascontiguousarray(times, dtype=np.float64)
    if Y0.ndim != 2 or P.ndim != 2 or len(Y0) != len(P) or times.ndim != 1:
        raise ValueError(f"Y0 (N, n) and P (N, m) with equal N, and 1-D times; got shapes {Y0.shape}, "
                         f"{P.shape}, {times.shape}")
    if int(lanes) < 1 or int(chunk) < 1:
        raise ValueError(f"lanes and chunk must be positive, got {lanes} and {chunk}")
    if dfdt is None:
        tmode, dprog, dconsts = (2 if rhs.uses_input[0] else 0), EMPTY_PROGRAM, EMPTY_ARRAY
    else:
        tmode, dprog, dconsts = 1, dfdt.prog, dfdt.consts
    N, n = Y0.shape
    out = np.empty((N, len(times), n))
    status = np.empty(N, dtype=np.int64)
    if N == 0:
        return out, status, 0
    plan = lu_plan(jac, n)
    if not valid_arguments(n, P.shape[1], rhs.prog[H_NIN], rhs.n_outputs, jac.prog[H_NIN], jac.n_outputs,
                           dprog[H_NIN], dfdt.n_outputs if dfdt is not None else 0, tmode, plan[0], float(t0), times,
                           float(rtol), float(atol), EMPTY_ARRAY, n):
        raise ValueError(explain_bad_input(rhs, jac, dfdt, Y0[0], P[0], t0, times, rtol, float(atol), EMPTY_ARRAY))
    from .compile_notice import announce_compilation
    announce_compilation(_lanes_solve, "the ensemble stiff-integrator")
    args = (rhs.prog, rhs.consts, jac.prog, jac.consts, dprog, dconsts, tmode, plan, Y0, P, float(t0), times,
            float(rtol), float(atol), int(max_steps))
    steps = run_chunks(lambda first, stop: _lanes_solve(*args, first, stop, int(lanes), out, status), N, int(chunk))
    return out, status, int(sum(steps))
