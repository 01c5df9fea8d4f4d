"""The exact affine solver against closed forms, arbitrary precision and its own fallback."""

import mpmath as mp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from kinetics.numerics.linear import MAX_EIGEN_CONDITION, dd1, dd2_zero, solve_affine


def mp_dd1(a, b):
    a, b = mp.mpc(a), mp.mpc(b)
    return mp.exp(a) if a == b else (mp.exp(a) - mp.exp(b)) / (a - b)


def mp_dd2(a, b):
    """e[a, b, 0] via the integral representation (robust for coincident points)."""
    a, b = mp.mpc(a), mp.mpc(b)
    return mp.quad(lambda s: mp.quad(lambda r: mp.exp(a * (1 - s) + b * (s - r) + 0 * r), [0, s]), [0, 1])


POINTS = [(-1.0, -2.0), (-3.0, -3.0), (-3.0, -3.0 + 1e-9), (0.0, 0.0), (0.0, -1e-12), (-50.0, -0.5),
          (-1 + 2j, -1 - 2j), (-700.0, -1.0), (0.5, -0.3), (2.0, 2.0 + 1e-7), (-1e-6, 3e-7)]


@pytest.mark.parametrize("a,b", POINTS)
def test_divided_differences_match_arbitrary_precision(a, b):
    mp.mp.dps = 30
    a_arr, b_arr = np.array([a], dtype=complex), np.array([b], dtype=complex)
    got1 = complex(dd1(a_arr, b_arr)[0])
    want1 = complex(mp_dd1(a, b))
    assert abs(got1 - want1) <= 1e-13 * abs(want1) + 1e-300
    got2 = complex(dd2_zero(a_arr, b_arr)[0])
    want2 = complex(mp_dd2(a, b))
    assert abs(got2 - want2) <= 1e-9 * abs(want2) + 1e-300


def mp_exact(A, b, x0, taus, dps=40):
    """x(t) by the augmented matrix exponential in arbitrary precision."""
    mp.mp.dps = dps
    n = len(b)
    M = mp.zeros(n + 1, n + 1)
    for i in range(n):
        for j in range(n):
            M[i, j] = mp.mpf(float(A[i, j]))
        M[i, n] = mp.mpf(float(b[i]))
    z = mp.matrix([mp.mpf(float(v)) for v in x0] + [1])
    return np.array([[float(v) for v in (mp.expm(M * mp.mpf(float(t))) * z)[:n]] for t in taus])


def exo_linear_matrix():
    A = np.zeros((6, 6))
    b = np.zeros(6)
    b[0] = 1000
    A[0, 0] = -0.8; A[1, 0] = 0.5; A[1, 1] = -1.0; A[2, 1] = 0.8; A[3, 1] = 0.2
    A[3, 3] = -22.0; A[4, 3] = 2.0; A[4, 4] = -0.5; A[3, 4] = 0.5; A[5, 3] = 20.0
    return A, b


def chain(n):
    """The non-normal chain of PEERS.md."""
    A = np.zeros((n, n))
    forward = np.linspace(0.5, 2, n)
    for i in range(n):
        A[i, i] -= forward[i]
        if i < n - 1:
            A[i + 1, i] += forward[i]
        if i > 0:
            A[i - 1, i] += 0.1
            A[i, i] -= 0.1
    b = np.zeros(n)
    b[0] = 1000.0
    return A, b


def scaled_error(X, ref):
    """Max error relative to each compartment's largest value over time."""
    return np.max(np.abs(X - ref) / np.max(np.abs(ref), axis=0))


METHODS = ["eigen", "eigen-numpy", "expm"]  # eigen: the numba kernel when numba is installed


@pytest.mark.parametrize("method", METHODS)
def test_exo_linear_both_methods_exact(method):
    A, b = exo_linear_matrix()
    taus = np.logspace(-1, np.log10(48), 20)
    ref = mp_exact(A, b, np.zeros(6), taus)
    X, _, used = solve_affine(A, b, np.zeros(6), taus, method=method)
    assert used == method.replace("-numpy", "")
    mask = np.abs(ref) > 0
    assert np.max(np.abs(X[mask] - ref[mask]) / np.abs(ref[mask])) < 1e-10


def test_auto_uses_eigen_when_well_conditioned():
    A, b = exo_linear_matrix()
    assert solve_affine(A, b, np.zeros(6), [1.0])[2] == "eigen"


@pytest.mark.parametrize("n", [24, 96])
def test_non_normal_chain_falls_back_and_stays_exact(n):
    A, b = chain(n)
    lam, V = np.linalg.eig(A)
    assert np.linalg.cond(V) > 1e10  # a plain eigendecomposition would lose every digit here
    taus = np.linspace(0.1, 20, 200)
    X, _, used = solve_affine(A, b, np.zeros(n), taus)
    assert used == "expm"
    if n == 24:
        ref = mp_exact(A, b, np.zeros(n), taus[::40], dps=30)
        assert scaled_error(X[::40], ref) < 1e-10
    else:
        sol = solve_ivp(lambda t, x: A @ x + b, (0, 20), np.zeros(n), method="Radau", t_eval=taus[::20],
                        rtol=1e-12, atol=1e-14, jac=A)
        assert scaled_error(X[::20], sol.y.T) < 1e-8


def test_defective_matrix_equal_rates():
    # A -> B -> out with equal rates: a Jordan block; B(t) = A0 k t e^{-kt}
    k = 0.7
    A = np.array([[-k, 0.0], [k, -k]])
    taus = np.linspace(0, 10, 11)
    X, _, used = solve_affine(A, np.zeros(2), np.array([5.0, 0.0]), taus)
    assert used == "expm"
    np.testing.assert_allclose(X[:, 1], 5.0 * k * taus * np.exp(-k * taus), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("method", ["eigen", "eigen-numpy"])
def test_compiled_and_numpy_eigen_paths_agree_with_complex_eigenvalues(method):
    A = np.array([[-1.0, 0, 3.0], [1.0, -2.0, 0], [0, 2.0, -3.0]])
    taus = np.linspace(0, 5, 11)
    dA = np.zeros((2, 3, 3)); dA[0, 0, 0] = -1; dA[0, 1, 0] = 1; dA[1, 2, 1] = 1; dA[1, 1, 1] = -1
    db = np.zeros((2, 3)); db[1, 0] = 1
    x0, b = np.array([1.0, 0.5, 0.0]), np.array([0.3, 0.0, 0.1])
    X, S, _ = solve_affine(A, b, x0, taus, dA, db, np.zeros((3, 2)), method=method)
    Xe, Se, _ = solve_affine(A, b, x0, taus, dA, db, np.zeros((3, 2)), method="expm")
    np.testing.assert_allclose(X, Xe, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(S, Se, rtol=1e-10, atol=1e-12)


def test_complex_eigenvalues_cycle():
    # a cycle A -> B -> C -> A has complex eigenvalues; total is conserved
    A = np.array([[-1.0, 0, 3.0], [1.0, -2.0, 0], [0, 2.0, -3.0]])
    taus = np.linspace(0, 5, 21)
    X, _, used = solve_affine(A, np.zeros(3), np.array([1.0, 0, 0]), taus)
    assert np.iscomplexobj(np.linalg.eigvals(A))
    assert used == "eigen"
    np.testing.assert_allclose(X.sum(axis=1), 1.0, rtol=1e-13)
    ref = mp_exact(A, np.zeros(3), [1.0, 0, 0], taus[1::5])
    np.testing.assert_allclose(X[1::5], ref, rtol=1e-11)


@pytest.mark.parametrize("method", METHODS)
def test_sensitivities_match_finite_differences(method):
    A, b = exo_linear_matrix()
    taus = np.logspace(-1, np.log10(48), 20)
    # directions: k_mat (EE -> MVB), k_cl (P -> U), the source s_endo, and an initial amount
    dA = np.zeros((3, 6, 6)); db = np.zeros((3, 6)); s0 = np.zeros((6, 3))
    dA[0, 0, 0] = -1; dA[0, 1, 0] = 1
    dA[1, 3, 3] = -1; dA[1, 5, 3] = 1
    db[2, 0] = 1
    x0 = np.array([10.0, 0, 0, 3.0, 0, 0])
    s0[3, 1] = 1.0  # pretend P(0) depends on the second direction too
    X, S, used = solve_affine(A, b, x0, taus, dA, db, s0, method=method)
    assert used == method.replace("-numpy", "")
    for k, scale in enumerate([0.5, 20.0, 1000.0]):  # central differences, step relative to the parameter
        h = 1e-5 * scale
        xp = x0 + h * s0[:, k]
        xm = x0 - h * s0[:, k]
        Xp, _, _ = solve_affine(A + h * dA[k], b + h * db[k], xp, taus, method="expm")
        Xm, _, _ = solve_affine(A - h * dA[k], b - h * db[k], xm, taus, method="expm")
        fd = (Xp - Xm) / (2 * h)
        assert np.max(np.abs(S[:, :, k] - fd)) <= 1e-6 * np.max(np.abs(fd))


def test_condition_threshold_is_sane():
    assert 1e3 <= MAX_EIGEN_CONDITION <= 1e7


def test_kernel_real_and_complex_specializations_agree():
    """The one generic kernel, compiled for float64 (real spectrum) and for complex128 (forced
    through ``eigen_solve`` on the same real spectrum), gives the same states and sensitivities,
    including growing modes, zero eigenvalues and times where the stable small-|z| formulas apply."""
    kernel = pytest.importorskip("kinetics.numerics.linear_kernel")
    from scipy.linalg.lapack import dgeev
    A, b = exo_linear_matrix()
    A[2, 2] = 0.3  # a growing mode besides the zero eigenvalue of U
    taus = np.r_[0.0, 1e-9, 1e-3, 0.1, 0.4, np.linspace(0.6, 20, 15)]
    rng = np.random.default_rng(5)
    K, n, m = 4, 6, len(taus)
    dA = rng.normal(size=(K, n, n)) * (rng.random((K, n, n)) < 0.3)
    db, s0, x0 = rng.normal(size=(K, n)), rng.normal(size=(n, K)), rng.normal(size=n)
    wr, wi, _, vr, info = dgeev(A, compute_vl=0, overwrite_a=0)
    assert info == 0 and not wi.any()
    out = []
    for real in (True, False):
        X, S = np.empty((m, n)), np.empty((m, n, K))
        if real:
            ok = kernel.eigen_solve_real(wr, np.ascontiguousarray(vr), b, x0, taus, dA, db, s0, MAX_EIGEN_CONDITION, X, S)
        else:
            ok = kernel.eigen_solve(wr, wi, vr, b, x0, taus, dA, db, s0, MAX_EIGEN_CONDITION, X, S)
        assert ok
        out.append((X, S))
    (Xr, Sr), (Xc, Sc) = out
    for got, want in ((Xc, Xr), (Sc, Sr)):
        scale = np.max(np.abs(want), axis=tuple(range(1, want.ndim)), keepdims=True)  # per output time
        assert np.max(np.abs(got - want) / scale) <= 1e-13


@pytest.mark.parametrize("A", [
    np.array([[-1.0, 0.0, 0.0], [1.0, -0.3, 0.0], [0.0, 0.3, 0.0]]),      # real, with a sink
    np.array([[-0.2, 2.0, 0.0], [-2.0, -0.2, 0.0], [0.5, 0.0, -1.0]]),    # complex pair
    np.array([[0.4, 0.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]),       # a growing mode
    np.array([[-1.0, 0.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]),     # defective: the expm path
], ids=["real", "complex", "growth", "defective"])
def test_affine_solution_is_solve_affine_at_scattered_times(A):
    from kinetics.numerics.linear import affine_solution
    b, x0 = np.array([1.0, 0.0, 0.5]), np.array([2.0, 1.0, 0.0])
    taus = np.array([3.7, 0.0, 1e-9, 0.25, 12.0])           # unsorted, as a root finder asks
    at = affine_solution(A, b, x0)
    expected = np.array([solve_affine(A, b, x0, [tau])[0][0] for tau in taus])
    np.testing.assert_allclose(at(taus), expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(at(0.25)[0], expected[3], rtol=1e-12)


def test_compiled_matrix_exponential_against_scipy_and_closed_forms():
    """The compiled expm (scipy's scaling-and-squaring algorithm) against arbitrary precision over
    a range of sizes and norms (every Padé degree, up to a dozen squarings), within the
    conditioning of the exponential (a relative error growing like ||A|| eps), and exactly
    known cases."""
    kernel = pytest.importorskip("kinetics.numerics.linear_kernel")
    mp.mp.dps = 30
    rng = np.random.default_rng(3)
    for n in (1, 2, 4, 9):
        for scale in (1e-8, 1e-3, 0.05, 0.5, 2.0, 20.0, 200.0):
            A = rng.normal(size=(n, n)) * scale / np.sqrt(n)
            want = np.array(mp.expm(mp.matrix(A.tolist())).tolist(), dtype=float)
            got = kernel.expm(A)
            tolerance = 4e-15 * max(1.0, np.abs(A).sum(axis=0).max())
            assert np.max(np.abs(got - want)) <= tolerance * np.max(np.abs(want)), (n, scale)
    np.testing.assert_array_equal(kernel.expm(np.zeros((3, 3))), np.eye(3))
    a, t = -0.7, 3.0       # a Jordan block: exp(t [[a, 1], [0, a]]) = e^{at} [[1, t], [0, 1]]
    np.testing.assert_allclose(kernel.expm(t * np.array([[a, 1.0], [0.0, a]])),
                               np.exp(a * t) * np.array([[1.0, t], [0.0, 1.0]]), rtol=1e-14, atol=1e-300)
    N = np.diag(np.ones(3), 1) * 50.0          # nilpotent, large norm: exp = I + N + N^2/2 + N^3/6
    want = np.eye(4) + N + N @ N / 2 + N @ N @ N / 6
    np.testing.assert_allclose(kernel.expm(N), want, rtol=1e-13)


def test_data_rows_of_a_defective_model_come_from_the_exponential():
    """A -> B -> out with equal rates k (a Jordan block: the eigen path declines): the one-call
    row evaluator of fits takes the compiled exponential instead of giving up, with exact
    values B(t) = A0 k t e^{-kt} and sensitivities dB/dk = A0 t e^{-kt} (1 - k t)."""
    pytest.importorskip("kinetics.numerics.linear_kernel")
    from kinetics.numerics.linear import affine_rows
    k, a0 = 0.7, 5.0
    A = np.array([[-k, 0.0], [k, -k]])
    dA_full = np.array([[[-1.0, 0.0], [1.0, -1.0]]])       # dA/dk
    taus = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 7.5])
    t_index = np.arange(len(taus), dtype=np.intp)
    series = (np.eye(2), np.zeros(2), np.zeros((0, 2, 2)), np.zeros((0, 2)), np.ones(len(taus), dtype=np.intp))
    out = affine_rows(A, np.zeros(2), np.array([a0, 0.0]), taus, dA_full, np.zeros((1, 2)), np.ones((1, 1)),
                      np.zeros((2, 1)), series, t_index)
    assert out is not None
    f, J = out
    np.testing.assert_allclose(f, a0 * k * taus * np.exp(-k * taus), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(J[:, 0], a0 * taus * np.exp(-k * taus) * (1 - k * taus), rtol=1e-11, atol=1e-14)
