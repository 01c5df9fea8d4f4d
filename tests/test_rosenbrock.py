"""Tests for the instruction tape (kinetics.codegen.tape) and the compiled Rodas5P integrator
(kinetics.numerics.rosenbrock)."""

import math
import pickle

import numpy as np
import pytest
import sympy as sp

pytest.importorskip("numba")

from scipy.integrate import solve_ivp  # noqa: E402
from scipy.linalg import expm  # noqa: E402
from scipy.special import lambertw  # noqa: E402

from kinetics.codegen.tape import build_tapes, sensitivity_tapes  # noqa: E402
from kinetics.numerics.rosenbrock import (STATUS_MAX_STEPS, STATUS_OK, STATUS_STEP_UNDERFLOW, dense_state,  # noqa: E402
                                          integrate, integrate_watching, numba_available, product_plan)
from kinetics.codegen.tape import Tape  # noqa: E402

T = sp.Symbol("t", real=True)


# ----------------------------------------------------------------------------- tape


def _lambdify_check(exprs, syms, points, rtol=1e-14):
    tape = Tape.from_exprs(exprs, syms)
    got = tape.evaluate(points)
    f = sp.lambdify(syms, exprs, modules="numpy")
    want = np.array([np.broadcast_to(np.asarray(v, dtype=float), (points.shape[0],))
                     for v in f(*points.T)]).T
    scale = np.maximum(np.abs(want), 1e-300)
    err = np.abs(got - want) / scale
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert err[ok].max() <= rtol, (err.max(axis=0), exprs)
    # the 1-D path agrees with the batched one
    np.testing.assert_array_equal(tape.evaluate(points[0]), got[0])
    return tape


def test_tape_matches_lambdify_on_representative_expressions():
    x, y, z = sp.symbols("x y z", real=True)
    exprs = [
        x + y * z - 3,
        x - 2 * y**2 + z / 3,
        sp.exp(-x) * sp.log(y),
        sp.Min(x, y, z) + sp.Max(x, 1),
        sp.Piecewise((x, x > y), (y * z, sp.And(x < 1, z >= 0)), (0, True)),
        sp.Piecewise((x**2, sp.Or(x <= 0.2, sp.Eq(z, 2))), (sp.sqrt(y), sp.Ne(x, y)), (1, True)),
        sp.Heaviside(x - 0.5) + sp.Heaviside(y - 1, 1),
        sp.sqrt(y) + y**-0.5 + y**1.5 + x**7 + x**-3 + y**z + x**4 + y ** sp.Rational(1, 3),
        sp.Abs(x - y) + sp.tanh(x) + sp.sin(y) * sp.cos(z),
        sp.log(y, 10) + sp.log(z) / 7,
        400 * y / (50 + y) - 2 * x + 0.5 * z,
        sp.Max(0, x - y) ** 2 / (1 + z**2),
        1 / (x * y * z) - x / y / z,
        sp.exp(sp.Min(x, 2)) * sp.Piecewise((1, sp.Not(x > 0.5)), (2, True)),
    ]
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(-1, 1, 200), rng.uniform(0.1, 3, 200),
                              rng.uniform(0.1, 3, 200)])
    points[:5, 2] = 2.0       # hit the Eq branch
    points[5:10, 0] = 0.5     # Heaviside at 0 (H0 = 1/2)
    points[10:15, 1] = 1.0    # Heaviside(x, 1) at 0
    tape = _lambdify_check(exprs, [x, y, z], points)
    assert tape.n_outputs == len(exprs)


def test_tape_random_expressions():
    rng = np.random.default_rng(7)
    x, y = sp.symbols("x y", positive=True)
    leaves = [x, y, sp.Integer(2), sp.Rational(3, 4), sp.Float(0.37)]
    unary = [sp.exp, sp.log, sp.sqrt, sp.tanh, lambda a: a**2, lambda a: 1 / a]
    binary = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
              lambda a, b: a / b, lambda a, b: sp.Min(a, b), lambda a, b: sp.Max(a, b)]

    def rand_expr(depth):
        if depth == 0 or rng.random() < 0.2:
            return leaves[rng.integers(len(leaves))]
        if rng.random() < 0.35:
            arg = rand_expr(depth - 1)
            op = unary[rng.integers(len(unary))]
            if op in (sp.exp,):
                arg = sp.tanh(arg)  # keep values moderate
            if op in (sp.log, sp.sqrt):
                arg = 1 + arg**2
            return op(arg)
        return binary[rng.integers(len(binary))](rand_expr(depth - 1), rand_expr(depth - 1))

    exprs = [e for e in (rand_expr(4) for _ in range(40)) if not e.has(sp.zoo, sp.nan)][:25]
    points = np.column_stack([rng.uniform(0.2, 2, 50), rng.uniform(0.2, 2, 50)])
    # sums of several terms may be associated differently from the printed code
    _lambdify_check(exprs, [x, y], points, rtol=1e-12)


def test_tape_semantics_and_errors():
    x, y = sp.symbols("x y", real=True)
    tape = Tape.from_exprs([sp.Heaviside(x), sp.Heaviside(x, 1), sp.Piecewise((1, x > 0)),
                            x / y, sp.log(x)], [x, y])
    out = tape.evaluate(np.array([0.0, 0.0]))
    assert out[0] == 0.5 and out[1] == 1.0
    assert np.isnan(out[2])                  # Piecewise without an otherwise-branch
    assert np.isnan(out[3])                  # 0/0 gives nan, no exception
    assert out[4] == -np.inf
    with pytest.raises(ValueError, match="gamma"):
        Tape.from_exprs([sp.gamma(x)], [x])
    with pytest.raises(ValueError, match="unsupported sympy node f"):
        Tape.from_exprs([sp.Function("f")(x)], [x])
    with pytest.raises(ValueError, match="symbol y is not among the tape inputs"):
        Tape.from_exprs([x + y], [x])
    with pytest.raises(ValueError, match="ImaginaryUnit"):
        Tape.from_exprs([sp.I * x], [x])


def test_tape_fixed_prologue_and_pickle():
    x, k1, k2 = sp.symbols("x k1 k2", real=True)
    exprs = [sp.exp(k1 + k2) * x, (k1 * k2) ** 2]
    tape = Tape.from_exprs(exprs, [x, k1, k2], n_varying=1)
    assert tape.n_fixed >= 3                 # exp(k1 + k2), k1*k2 and its square
    assert tape.n_instructions - tape.n_fixed == 1
    v = np.array([1.5, 0.3, 0.2])
    np.testing.assert_allclose(tape.evaluate(v), [np.exp(0.5) * 1.5, 0.06**2], rtol=1e-15)
    clone = pickle.loads(pickle.dumps(tape))
    np.testing.assert_array_equal(clone.evaluate(v), tape.evaluate(v))
    assert "EXP" in tape.describe()


# ----------------------------------------------------------------------------- integrator


def test_numba_available():
    assert numba_available()


def test_exponential_decay_and_output_at_t0():
    x, k = sp.symbols("x k")
    rhs, jac, dfdt = build_tapes([-k * x], T, [x], [k])
    assert dfdt is None
    times = np.array([0.0, 0.0, 0.1, 1.0, 5.0, 20.0])
    Y, status, n_steps, n_rhs = integrate(rhs, jac, [2.0], [0.7], 0.0, times, 1e-10, 1e-14)
    assert status == STATUS_OK and n_steps > 0 and n_rhs > n_steps
    np.testing.assert_allclose(Y[:, 0], 2.0 * np.exp(-0.7 * times), rtol=1e-8)
    assert Y[0, 0] == 2.0 and Y[1, 0] == 2.0
    # only t0 requested: no step at all
    Y, status, n_steps, _ = integrate(rhs, jac, [2.0], [0.7], 1.0, [1.0], 1e-8, 1e-10)
    assert status == STATUS_OK and n_steps == 0 and Y[0, 0] == 2.0


@pytest.mark.parametrize("dense", [True, False])
def test_chain_abc_closed_form(dense):
    a, b, c, ka, kb = sp.symbols("A B C ka kb")
    rhs, jac, _ = build_tapes([-ka * a, ka * a - kb * b, kb * b], T, [a, b, c], [ka, kb])
    k1, k2 = 1.3, 0.4
    times = np.logspace(-2, 1.5, 25)
    Y, status, _, _ = integrate(rhs, jac, [1.0, 0.0, 0.0], [k1, k2], 0.0, times, 1e-10, 1e-14,
                                dense_output=dense)
    assert status == STATUS_OK
    A = np.exp(-k1 * times)
    B = k1 / (k2 - k1) * (np.exp(-k1 * times) - np.exp(-k2 * times))
    C = 1 - A - B
    np.testing.assert_allclose(Y, np.column_stack([A, B, C]), rtol=1e-7)


def test_michaelis_menten_elimination_lambertw():
    p, vmax, km = sp.symbols("P Vmax Km")
    rhs, jac, _ = build_tapes([-vmax * p / (km + p)], T, [p], [vmax, km])
    P0, Vm, Km = 500.0, 40.0, 20.0
    times = np.linspace(0, 20, 41)
    Y, status, _, _ = integrate(rhs, jac, [P0], [Vm, Km], 0.0, times, 1e-10, 1e-12)
    assert status == STATUS_OK
    exact = Km * lambertw(P0 / Km * np.exp((P0 - Vm * times) / Km)).real
    np.testing.assert_allclose(Y[:, 0], exact, rtol=1e-7, atol=1e-10)


def test_robertson_against_radau():
    y1, y2, y3, k1, k2, k3 = sp.symbols("y1 y2 y3 k1 k2 k3")
    f = [-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2, k2 * y2**2]
    rhs, jac, _ = build_tapes(f, T, [y1, y2, y3], [k1, k2, k3])
    p = np.array([0.04, 3e7, 1e4])
    times = np.array([1e-4, 1e-2, 1.0, 10.0, 40.0])
    atol = np.array([1e-10, 1e-14, 1e-10])
    Y, status, _, _ = integrate(rhs, jac, [1.0, 0.0, 0.0], p, 0.0, times, 1e-8, atol)
    assert status == STATUS_OK
    fl = sp.lambdify([y1, y2, y3], [e.subs(dict(zip((k1, k2, k3), p))) for e in f])
    jl = sp.lambdify([y1, y2, y3], sp.Matrix(f).jacobian([y1, y2, y3]).subs(
        dict(zip((k1, k2, k3), p))))
    ref = solve_ivp(lambda t, y: fl(*y), (0, 40), [1.0, 0.0, 0.0], method="Radau",
                    t_eval=times, rtol=1e-10, atol=[1e-14, 1e-18, 1e-14],
                    jac=lambda t, y: np.array(jl(*y), dtype=float)).y.T
    np.testing.assert_allclose(Y, ref, rtol=2e-7, atol=1e-12)  # atol: y3 ~ 1e-8 at t=1e-4
    np.testing.assert_allclose(Y.sum(axis=1), 1.0, rtol=1e-13)


@pytest.mark.parametrize("with_dfdt", [True, False])
def test_non_autonomous(with_dfdt):
    x = sp.Symbol("x")
    rhs, jac, dfdt = build_tapes([-x + sp.sin(T)], T, [x], [])
    assert dfdt is not None and rhs.depends_on(0)
    times = np.linspace(0.5, 12, 12)
    Y, status, _, _ = integrate(rhs, jac, [1.0], [], 0.0, times, 1e-10, 1e-12,
                                dfdt=dfdt if with_dfdt else None)
    assert status == STATUS_OK
    exact = (np.sin(times) - np.cos(times)) / 2 + 1.5 * np.exp(-times)
    np.testing.assert_allclose(Y[:, 0], exact, rtol=1e-8, atol=1e-12)


def test_mass_conservation_closed_system():
    a, b, c, d = sp.symbols("A B C D")
    k = sp.symbols("k0:5")
    flows = [k[0] * a, k[1] * b, k[2] * b * c / (1 + c), k[3] * c**2, k[4] * d]
    f = [-flows[0] + flows[1] + flows[4],      # A <-> B, D -> A
         flows[0] - flows[1] - flows[2],       # B -> C (saturable in C)
         flows[2] - flows[3],                  # C -> D (second order)
         flows[3] - flows[4]]
    rhs, jac, _ = build_tapes(f, T, [a, b, c, d], list(k))
    times = np.logspace(-2, 2, 30)
    Y, status, _, _ = integrate(rhs, jac, [10.0, 0.0, 1.0, 0.0], [2.0, 0.5, 3.0, 0.7, 0.2],
                                0.0, times, 1e-8, 1e-10)
    assert status == STATUS_OK
    np.testing.assert_allclose(Y.sum(axis=1), 11.0, rtol=1e-13)
    assert np.all(Y > -1e-9)


def test_sparse_and_pivoted_linear_algebra_against_expm():
    # A random sparse linear system (fill-in) and a rotation (the unpivoted LU fails its
    # threshold test for large steps, so the dense pivoted LU is used): exact via expm.
    rng = np.random.default_rng(3)
    n = 12
    A = np.where(rng.random((n, n)) < 0.25, rng.normal(size=(n, n)), 0.0)
    A -= np.diag(np.abs(A).sum(axis=1) + 0.1)
    A[0, n - 1] = 0.5
    A[5, 4] = -30.0
    A[4, 5] = 30.0
    ys = sp.symbols(f"y0:{n}")
    f = [sum(sp.Float(A[i, j]) * ys[j] for j in range(n) if A[i, j] != 0) for i in range(n)]
    rhs, jac, _ = build_tapes(f, T, ys, [])
    y0 = rng.uniform(0, 1, n)
    times = np.array([0.05, 0.5, 2.0, 7.0])
    Y, status, _, _ = integrate(rhs, jac, y0, [], 0.0, times, 1e-10, 1e-13)
    assert status == STATUS_OK
    exact = np.array([expm(A * t) @ y0 for t in times])
    np.testing.assert_allclose(Y, exact, rtol=1e-7, atol=1e-11)

    u, v, w = sp.symbols("u v w")
    rhs, jac, _ = build_tapes([-w * v, w * u], T, [u, v], [w])
    times = np.linspace(0, 10, 11)
    Y, status, _, _ = integrate(rhs, jac, [1.0, 0.0], [10.0], 0.0, times, 1e-10, 1e-12)
    assert status == STATUS_OK
    np.testing.assert_allclose(Y, np.column_stack([np.cos(10 * times), np.sin(10 * times)]),
                               atol=1e-8)


# exo_sat (reference model /work/shared/reference/exo_sat.toml), built by hand
EXO_STATES = sp.symbols("EE MVB LYS P T_ U")
EXO_PARAMS = sp.symbols("s_endo k_rec k_mat k_lys k_sec k_pt k_tp Vmax Km")
EXO_VALUES = np.array([1000, 0.3, 0.5, 0.8, 0.2, 2.0, 0.5, 400, 50.0])


def exo_sat_rhs():
    EE, MVB, LYS, P, Tt, U = EXO_STATES
    s_endo, k_rec, k_mat, k_lys, k_sec, k_pt, k_tp, Vmax, Km = EXO_PARAMS
    clearance = Vmax * P / (Km + P)
    return [s_endo - k_rec * EE - k_mat * EE,
            k_mat * EE - k_lys * MVB - k_sec * MVB,
            k_lys * MVB,
            k_sec * MVB - k_pt * P + k_tp * Tt - clearance,
            k_pt * P - k_tp * Tt,
            clearance]


@pytest.fixture(scope="module")
def exo_reference():
    f = exo_sat_rhs()
    subs = dict(zip(EXO_PARAMS, EXO_VALUES))
    fl = sp.lambdify([EXO_STATES], [e.subs(subs) for e in f])
    jl = sp.lambdify([EXO_STATES], sp.Matrix(f).jacobian(EXO_STATES).subs(subs))
    times = np.logspace(-1, np.log10(48), 20)
    # Radau at rtol 1e-10 agrees with Radau at rtol 1e-13 to 3e-11 here (checked once).
    sol = solve_ivp(lambda t, y: fl(y), (0.0, 48.0), np.zeros(6), method="Radau",
                    t_eval=times, rtol=1e-10, atol=1e-13,
                    jac=lambda t, y: np.array(jl(y), dtype=float))
    return times, sol.y.T


@pytest.mark.parametrize("dense", [True, False])
def test_exo_sat_against_radau(exo_reference, dense):
    times, ref = exo_reference
    rhs, jac, dfdt = build_tapes(exo_sat_rhs(), T, EXO_STATES, EXO_PARAMS)
    assert dfdt is None
    Y, status, n_steps, _ = integrate(rhs, jac, np.zeros(6), EXO_VALUES, 0.0, times, 1e-8,
                                      1e-10, dense_output=dense)
    assert status == STATUS_OK
    assert np.max(np.abs(Y - ref) / np.abs(ref)) <= 1e-7
    assert n_steps < 400
    # the steady state of the bounded part (EE 1250, MVB 625, P 22.727, T 90.909)
    np.testing.assert_allclose(Y[-1, [0, 1, 3, 4]], [1250, 625, 22.727267, 90.909031],
                               rtol=1e-6)


def test_blow_up_reports_failure():
    x = sp.Symbol("x")
    rhs, jac, _ = build_tapes([x**2], T, [x], [])
    times = np.array([0.5, 0.9, 1.5, 2.0])
    Y, status, _, _ = integrate(rhs, jac, [1.0], [], 0.0, times, 1e-8, 1e-10)
    assert status != STATUS_OK
    np.testing.assert_allclose(Y[:2, 0], [2.0, 10.0], rtol=1e-6)   # 1/(1 - t) before t = 1
    assert np.all(np.isnan(Y[2:]))


def _sensitivity_symbols(f, x, p):
    """S (row-major: state i, direction k at n + i*K + k, kinetics' layout) and F_p D for the
    sensitivities of x' = f(x, p) along log-scale directions (dx/dlog p)."""
    S = sp.Matrix(len(x), len(p), lambda i, k: sp.Symbol(f"s_{i}_{k}"))
    return S, f.jacobian(p) * sp.diag(*p)


def _with_sensitivities(f, x, p):
    """Tapes of x' = f(x, p) and its sensitivities dx/dlog p: y = [x, S]."""
    S, FpD = _sensitivity_symbols(f, x, p)
    return build_tapes(list(f) + list(f.jacobian(x) * S + FpD), T, [*x, *S], p)


def test_sensitivity_blocks_against_the_closed_form():
    # logistic growth: x(t) = c x0 e^{rt} / (c + x0 (e^{rt} - 1)); a second state z' = k x - z
    # couples to it. The sensitivities by block substitution (n_base) and by factoring the whole
    # augmented matrix agree, and both match the exact derivatives of the closed form
    x, z, r, c = sp.symbols("x z r c", positive=True)
    f = sp.Matrix([r * x * (1 - x / c), 0.7 * x - z])
    rhs, jac, dfdt = _with_sensitivities(f, [x, z], [r, c])
    p, x0 = np.array([1.3, 50.0]), 2.0
    times = np.array([0.5, 2.0, 4.0, 8.0])
    y0 = np.concatenate([[x0, 0.0], np.zeros(4)])
    out = {}
    for n_base in (2, None):
        Y, status, _, _ = integrate(rhs, jac, y0, p, 0.0, times, 1e-11, 1e-13, dfdt=dfdt, n_base=n_base)
        assert status == STATUS_OK
        out[n_base] = Y
    exact = c * x0 * sp.exp(r * T) / (c + x0 * (sp.exp(r * T) - 1))
    values = {r: p[0], c: p[1]}
    want_x = np.array([float(exact.subs(values).subs(T, t)) for t in times])
    want_s = np.array([[float((sp.diff(exact, q) * q).subs(values).subs(T, t)) for q in (r, c)] for t in times])
    np.testing.assert_allclose(out[2][:, 0], want_x, rtol=1e-9)
    np.testing.assert_allclose(out[2][:, [2, 3]], want_s, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(out[2], out[None], rtol=1e-9, atol=1e-10)
    # the same system formed by the integrator from tapes of its parts (f, J, F_p D, dJ/dx,
    # d(F_p D)/dx); a time-dependent input (a factor 1 + 0 t) gives it a dfdt tape too
    S, FpD = _sensitivity_symbols(f, [x, z], [r, c])
    for g in (f, f.applyfunc(lambda e: e * (1 + 0 * T)) + sp.Matrix([0, 1e-30 * T])):
        p_rhs, p_jac, p_dfdt, plan = sensitivity_tapes(list(g), g.jacobian([x, z]), FpD, T, [x, z], list(S), [r, c])
        # J: (0,0), (1,0), (1,1); F_p D: (0,0), (0,1); dJ/dx: d(J_00)/dx; d(F_p D)/dx: (0,0) and (0,1) in x
        assert list(plan[:4]) == [3, 2, 1, 2] and (p_dfdt is None) == (g is f)
        Y, status, _, _ = integrate(p_rhs, p_jac, y0, p, 0.0, times, 1e-11, 1e-13, dfdt=p_dfdt, n_base=2,
                                    products=plan)
        assert status == STATUS_OK
        np.testing.assert_allclose(Y[:, 0], want_x, rtol=1e-9)
        np.testing.assert_allclose(Y[:, [2, 3]], want_s, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(Y, out[2], rtol=1e-9, atol=1e-10)
    # a plan that does not fit the tapes or the system is refused, naming the plan
    j, g_, h, dg = [(0, 0, 0), (1, 0, 0), (1, 1, 0)], [(0, 0), (0, 1)], [(0, 0, 0, 0)], [(0, 0, 0), (0, 1, 0)]
    for bad in (plan[:-1], product_plan([(0, 0, 0), (1, 0, 0), (1, 2, 0)], g_, h, dg),
                product_plan(j, [(0, 0), (0, 2)], h, dg), product_plan(j, g_, [(0, 0, 2, 0)], dg),
                product_plan(j, g_, h, dg[:1])):
        with pytest.raises(ValueError, match="products plan does not fit"):
            integrate(p_rhs, p_jac, y0, p, 0.0, times, 1e-8, 1e-10, dfdt=p_dfdt, n_base=2, products=bad)


def test_sensitivity_products_guard_an_infinite_jacobian_entry():
    # x' = -k sqrt(x) from x = 0 stays 0, so do its sensitivities; J = -k / (2 sqrt(x)) is
    # infinite there (and dJ/dx in the coupling). A guarded entry counts its product with S as
    # 0 where S = 0 (the product's limit), and the iteration matrix takes the infinite power as
    # 0; without the guards inf * 0 = NaN stops the integration. A second state z' = a - b z,
    # z(0) = 0, has z = (a/b)(1 - e^{-bt}) and its own sensitivities to check the rest.
    x, zz, k, a, b = sp.symbols("x zz k a b")   # (not positive: Eq(x, 0) must not fold to False)
    f = sp.Matrix([-k * sp.sqrt(x), a - b * zz])
    S, FpD = _sensitivity_symbols(f, [x, zz], [k, a, b])
    J = f.jacobian([x, zz])

    def fractional(e):
        return any(q.is_Pow and not q.exp.is_Integer and x in q.base.free_symbols for q in e.atoms(sp.Pow))

    def as_zero(e):
        return e.replace(lambda q: q.is_Pow and not q.exp.is_Integer,
                         lambda q: sp.Piecewise((0, sp.And(sp.Eq(q.base, 0), q.exp < 0)), (q, True)))
    p = np.array([0.5, 2.0, 0.3])
    y0 = np.zeros(8)
    times = np.array([1.0, 5.0])
    rhs, jac, dfdt, plan = sensitivity_tapes(list(f), J, FpD, T, [x, zz], list(S), [k, a, b], guarded=fractional,
                                             singular_as_zero=as_zero)
    Y, status, _, _ = integrate(rhs, jac, y0, p, 0.0, times, 1e-10, 1e-12, dfdt=dfdt, n_base=2, products=plan)
    assert status == STATUS_OK
    exact = (a / b) * (1 - sp.exp(-b * T))
    values = {a: p[1], b: p[2]}
    for row, t in zip(Y, times):
        assert row[0] == 0.0 and np.all(row[2:5] == 0.0)
        want = [0.0] + [float((sp.diff(exact, q) * q).subs(values).subs(T, t)) for q in (a, b)]
        np.testing.assert_allclose(row[1], float(exact.subs(values).subs(T, t)), rtol=1e-9)
        np.testing.assert_allclose(row[5:8], want, rtol=1e-8)
    rhs, jac, dfdt, plan = sensitivity_tapes(list(f), J, FpD, T, [x, zz], list(S), [k, a, b],
                                             singular_as_zero=as_zero)
    _, status, _, _ = integrate(rhs, jac, y0, p, 0.0, times, 1e-10, 1e-12, dfdt=dfdt, n_base=2, products=plan)
    assert status != STATUS_OK


def test_sensitivity_tolerance_in_the_error_norm():
    # the sensitivities enter the error norm with tolerances sensitivity_tolerance times the
    # state's, the state's own norm undiluted by theirs: inf gives exactly the steps of the
    # state alone (and its values to rounding), with sensitivities that are the exact
    # derivatives of that computed state, close to the closed form's; the default factor (100)
    # and 1 control them too (more steps, closer)
    x, z, r, c = sp.symbols("x z r c", positive=True)
    f = sp.Matrix([r * x * (1 - x / c), 0.7 * x - z])
    rhs, jac, dfdt = _with_sensitivities(f, [x, z], [r, c])
    state_rhs, state_jac, state_dfdt = build_tapes(list(f), T, [x, z], [r, c])
    p, x0 = np.array([1.3, 50.0]), 2.0
    times = np.array([0.5, 2.0, 4.0, 8.0])
    y0 = np.concatenate([[x0, 0.0], np.zeros(4)])
    exact = c * x0 * sp.exp(r * T) / (c + x0 * (sp.exp(r * T) - 1))
    values = {r: p[0], c: p[1]}
    want_s = np.array([[float((sp.diff(exact, q) * q).subs(values).subs(T, t)) for q in (r, c)] for t in times])
    for rtol in (1e-6, 1e-8):
        X, status, state_steps, _ = integrate(state_rhs, state_jac, y0[:2], p, 0.0, times, rtol, 1e-2 * rtol,
                                              dfdt=state_dfdt)
        steps, errors = {}, {}
        for factor in (math.inf, 100.0, 1.0):
            Y, status, steps[factor], _ = integrate(rhs, jac, y0, p, 0.0, times, rtol, 1e-2 * rtol, dfdt=dfdt,
                                                   n_base=2, sensitivity_tolerance=factor)
            assert status == STATUS_OK
            errors[factor] = np.max(np.abs(Y[:, [2, 3]] - want_s) / np.abs(want_s))
            if factor == math.inf:
                assert steps[factor] == state_steps
                np.testing.assert_allclose(Y[:, :2], X, rtol=1e-13)
        assert state_steps == steps[math.inf] <= steps[100.0] < steps[1.0]
        assert errors[1.0] < 5 * rtol and errors[100.0] < 100 * rtol and errors[math.inf] < 100 * rtol
        assert errors[1.0] < errors[math.inf]


def test_sensitivity_blocks_fail_fast_at_a_blow_up():
    # a pathogen with quadratic growth (P' = rho P^2 - ...) that an effector pool E cannot stop:
    # P blows up at t ~ 3.6e-3. Near the singularity the coupling entries d(S')/dx grow with
    # |S| (1e13 against a diagonal of 1e6); factoring the whole augmented matrix, partial
    # pivoting took pivots from those rows, their rounding error entered the states' stages,
    # and the error estimate stayed at noise level (err ~ 1 whatever h): 20000 steps without
    # progress. By block substitution the integration stops at the singularity like the
    # state-only run, in about a thousand steps.
    N, E, L, P = x = sp.symbols("N E L P")
    rho = sp.Symbol("rho")
    f = sp.Matrix([-1.8e-4 * N * P - 2.5e-4 * N,
                   -7.1e-5 * E ** 2 + 1.6e-5 * E * P - 1.64 * E + 1.8e-4 * N * P,
                   -0.62 * E * L + 1.64 * E - 0.136 * L ** 2 - 99.2 * L,
                   -808.0 * E * P - 4.4e-3 * L * P + rho * P ** 2 - 0.042 * P])
    rhs, jac, dfdt = _with_sensitivities(f, list(x), [rho])
    y0 = np.array([8090.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    Y, status, n_steps, _ = integrate(rhs, jac, y0, np.array([280.75]), 0.0, np.array([0.001, 4.0]), 1e-8, 1e-10,
                                      max_steps=20000, dfdt=dfdt, n_base=4)
    assert status == STATUS_STEP_UNDERFLOW and n_steps < 3000
    assert np.isfinite(Y[0]).all() and np.isnan(Y[1]).all()
    # a system that is not a state and its sensitivities is refused in block mode (N' reads P)
    state_rhs, state_jac, _ = build_tapes(list(f), T, list(x), [rho])
    with pytest.raises(ValueError, match="block lower-triangular"):
        integrate(state_rhs, state_jac, y0[:4], np.array([280.75]), 0.0, [1.0], 1e-8, 1e-10, n_base=2)


def test_max_steps_and_input_validation():
    x, k = sp.symbols("x k")
    rhs, jac, _ = build_tapes([-k * x], T, [x], [k])
    Y, status, n_steps, _ = integrate(rhs, jac, [1.0], [1.0], 0.0, [100.0], 1e-10, 1e-12,
                                      max_steps=5)
    assert status == STATUS_MAX_STEPS and n_steps == 5 and np.isnan(Y).all()
    with pytest.raises(ValueError, match="sorted"):
        integrate(rhs, jac, [1.0], [1.0], 0.0, [2.0, 1.0], 1e-8, 1e-10)
    with pytest.raises(ValueError, match=">= t0"):
        integrate(rhs, jac, [1.0], [1.0], 1.0, [0.5], 1e-8, 1e-10)
    with pytest.raises(ValueError, match="inputs"):
        integrate(rhs, jac, [1.0], [1.0, 2.0], 0.0, [1.0], 1e-8, 1e-10)
    with pytest.raises(ValueError, match="atol"):
        integrate(rhs, jac, [1.0], [1.0], 0.0, [1.0], 1e-8, 0.0)
    with pytest.raises(ValueError, match="1-D"):
        integrate(rhs, jac, [[1.0]], [1.0], 0.0, [1.0], 1e-8, 1e-10)
    # a vector atol and a user-chosen first step
    Y, status, _, _ = integrate(rhs, jac, [1.0], [1.0], 0.0, [1.0], 1e-9, np.array([1e-12]),
                                first_step=1e-3)
    assert status == STATUS_OK and abs(Y[0, 0] - np.exp(-1)) < 1e-8


def test_watching_stops_at_the_step_where_a_sign_changes():
    # x' = -k x from 2: x - 0.5 turns negative at ln(4) / k; the step over which it does and
    # its interpolant locate the root to the integrator's accuracy
    x, k = sp.symbols("x k")
    rhs, jac, _ = build_tapes([-k * x], T, [x], [k])
    watch = Tape.from_exprs([x - 0.5, x + 1.0], [T, x, k], n_varying=2)
    times = np.array([0.5, 1.0, 3.0, 5.0])
    Y, status, crossing = integrate_watching(rhs, jac, [2.0], [0.7], 0.0, times, 1e-11, 1e-13, watch, [1.0, 1.0])
    root = np.log(4) / 0.7
    assert status == STATUS_OK and crossing is not None
    t_old, t_new, y_old, y_new, stages = crossing
    assert t_old < root < t_new and stages.shape == (8, 1)
    np.testing.assert_allclose([y_old[0], y_new[0]], 2.0 * np.exp(-0.7 * np.array([t_old, t_new])), rtol=1e-9)
    # the output times before the step are filled, the ones after it are not
    np.testing.assert_allclose(Y[:2, 0], 2.0 * np.exp(-0.7 * times[:2]), rtol=1e-9)
    assert np.isnan(Y[2:]).all()
    # Brent on the interpolant: the root to about the tolerance
    lo, hi = t_old, t_new
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if dense_state(mid, *crossing)[0] > 0.5 else (lo, mid)
    assert abs(lo - root) < 1e-9
    # no sign change: the whole way, no crossing; the other side declared: a stop after one step
    Y, status, crossing = integrate_watching(rhs, jac, [2.0], [0.7], 0.0, times, 1e-11, 1e-13, watch, [1.0, -1.0])
    assert crossing is not None and crossing[0] == 0.0
    watch_far = Tape.from_exprs([x - 0.01], [T, x, k], n_varying=2)
    Y, status, crossing = integrate_watching(rhs, jac, [2.0], [0.7], 0.0, times, 1e-11, 1e-13, watch_far, [1.0])
    assert crossing is None and status == STATUS_OK
    np.testing.assert_allclose(Y[:, 0], 2.0 * np.exp(-0.7 * times), rtol=1e-9)
    with pytest.raises(ValueError, match="watch tape"):
        integrate_watching(rhs, jac, [2.0], [0.7], 0.0, times, 1e-11, 1e-13, watch, [1.0])


def test_import_and_tape_without_numba():
    # numba is optional: the modules import, tapes evaluate (pure Python), integrate explains.
    import subprocess
    import sys
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, sympy as sp\n"
        "from kinetics.numerics import rosenbrock as R\n"
        "from kinetics.codegen.tape import Tape\n"
        "x, k = sp.symbols('x k')\n"
        "assert not R.numba_available()\n"
        "tp = Tape.from_exprs([k * x - sp.exp(x)], [x, k], n_varying=1, linear=[0])\n"
        "assert abs(tp.evaluate(np.array([0.5, 3.0]))[0] - (1.5 - np.exp(0.5))) < 1e-15\n"
        "from kinetics.codegen.tape import build_tapes\n"
        "rhs, jac, _ = build_tapes([-k * x], sp.Symbol('t'), [x], [k])\n"
        "try:\n"
        "    R.integrate(rhs, jac, [1.0], [1.0], 0.0, [1.0], 1e-8, 1e-10)\n"
        "except ImportError as e:\n"
        "    assert 'numba' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
