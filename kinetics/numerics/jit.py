"""The one optional-numba shim: every compiled kernel of kinetics is decorated with :func:`jit`.

numba is an optional dependency (the ``fast`` extra). With it, :func:`jit` is ``numba.njit``
with the options every kernel shares: ``cache=True`` (machine code cached on disk beside the
kernel's module), ``nogil=True`` (threads run kernels in parallel) and ``error_model="numpy"``
(a division by zero gives inf/nan as in numpy, not an exception). Without numba it returns the
function unchanged, so kernels run as plain Python (slow, but correct), and
:func:`numba_available` is False: callers with a faster non-numba route (scipy's LSODA,
scipy's ``least_squares``) take it.

This module is the only place that imports numba (:func:`lapack_dgeev`, :func:`lapack_dgesdd`
and :func:`lapack_dgesv` hand kernels numba's own LAPACK bindings); ``numba_types`` and :func:`overload` are
re-exported for the one kernel module (``linear_kernel``) that specializes on scalar types.
Compiling everything ahead of first use is :func:`kinetics.warm_up`.
"""

from __future__ import annotations

import threading

try:  # numba is optional (the "fast" extra)
    import numba as _numba
    from numba import types as numba_types
    from numba import prange      # parallel loops in kernels compiled with parallel=True
    from numba.extending import overload
except ImportError:  # pragma: no cover - exercised only without numba (subprocess tests)
    _numba = None
    numba_types = None
    prange = range

    def overload(*args, **kwargs):
        raise ImportError("numba is not installed: this kernel needs it (pip install numba)")

__all__ = ["jit", "numba_available", "numba_types", "overload", "prange", "lapack_dgeev", "lapack_dgesdd",
           "lapack_dgesv", "lapack_int", "run_chunks", "thread_count", "cache_dir",
           "JIT_OPTIONS"]

#: Options of every compiled kernel (see the module docstring).
JIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def numba_available() -> bool:
    """Whether numba is importable, i.e. whether :func:`jit` compiles."""
    return _numba is not None


def cache_dir() -> str:
    """numba's ``NUMBA_CACHE_DIR`` ("" when unset: numba caches beside each module)."""
    return (_numba.config.CACHE_DIR or "") if _numba is not None else ""


def jit(fn=None, **options):
    """``numba.njit`` with :data:`JIT_OPTIONS` (``options`` add to or override them), or the
    function unchanged without numba. Usable bare (``@jit``) or with options (``@jit(inline=...)``)."""
    def decorate(f):
        if _numba is None:
            return f
        return _numba.njit(**{**JIT_OPTIONS, **options})(f)
    return decorate(fn) if fn is not None else decorate


def lapack_dgeev():
    """numba's binding of LAPACK's dgeev (the one ``np.linalg.eig`` uses inside numba), callable
    from compiled code: what :mod:`kinetics.numerics.linear_batch` decomposes each set with.
    Needs numba."""
    from numba.np.linalg import _LAPACK, ensure_lapack   # numba's own binding; no public name
    ensure_lapack()
    return _LAPACK().numba_ez_rgeev(numba_types.float64)


def lapack_dgesdd():
    """numba's binding of LAPACK's dgesdd (the one ``np.linalg.svd`` uses inside numba), callable
    from compiled code: the trust-region kernels call it directly, without np.linalg.svd's
    wrapper code (a second of compile time). Needs numba."""
    from numba.np.linalg import _LAPACK, ensure_lapack
    ensure_lapack()
    return _LAPACK().numba_ez_gesdd(numba_types.float64)



def lapack_dgesv():
    """numba's binding of LAPACK's dgesv (the one ``np.linalg.solve`` uses inside numba),
    callable from compiled code: the matrix exponential calls it directly, without
    np.linalg.solve's wrapper code (its shape checks format error messages: seconds of compile
    time). Arguments (kind, n, nrhs, a, lda, ipiv, b, ldb); ``ipiv`` of dtype :func:`lapack_int`.
    Needs numba."""
    from numba.np.linalg import _LAPACK, ensure_lapack
    ensure_lapack()
    return _LAPACK().numba_xgesv(numba_types.float64)


def lapack_int():
    """The numpy integer type of LAPACK's integer arguments in numba's build (int32, or int64
    for an ILP64 LAPACK). Needs numba."""
    from numba.np.linalg import F_INT_nptype
    return F_INT_nptype

# ------------------------------------------------------------------- parallel over the cores
# The batched kernels run on Python threads (every kernel releases the GIL, ``nogil=True``)
# rather than in numba ``parallel=True``/``prange`` kernels: a prange kernel links the code it
# calls into a module of its own and optimizes it again (the lock-step integrator's parallel
# driver took ~35 s to compile on top of the ~20 s of the integrator itself), while threads
# run the one serial kernel that is compiled anyway.

_pool = None
_pool_lock = threading.Lock()


def thread_count() -> int:
    """Threads for the batched kernels: numba's NUMBA_NUM_THREADS (the cores unless set)."""
    if _numba is None:
        return 1
    return max(1, int(_numba.config.NUMBA_NUM_THREADS))


def run_chunks(function, n: int, min_chunk: int = 1) -> list:
    """``function(start, stop)`` for consecutive ranges covering ``0..n-1`` (about four per
    thread, at least ``min_chunk`` items each) on up to :func:`thread_count` threads; one range
    runs in the calling thread. Returns the results in range order; an exception in a range is
    raised here."""
    from concurrent.futures import ThreadPoolExecutor
    global _pool
    threads = thread_count()
    size = max(int(min_chunk), -(-n // (4 * threads)), 1)
    ranges = [(start, min(n, start + size)) for start in range(0, n, size)]
    if len(ranges) <= 1 or threads == 1:
        return [function(start, stop) for start, stop in ranges]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kinetics-kernel")
    futures = [_pool.submit(function, start, stop) for start, stop in ranges]
    return [future.result() for future in futures]
