"""The one first-use compile message: a line on stderr before numba compiles a group of kernels
that its disk cache does not hold yet (a fresh install, a new numba or Python version), so that
the one-off pause of the first run is explained.

Kernels compile lazily, when first used, group by group: a user who fits only affine models
never compiles the stiff integrator. Each group's entry point calls :func:`announce_compilation`
with its largest kernel; nothing else in kinetics prints about compilation (the command line
adds no note of its own), so a user sees one line per group that actually compiles and none
when the cache is filled.
"""

from __future__ import annotations

import sys

__all__ = ["announce_compilation", "needs_compilation", "NOTICE_SECONDS"]

#: The kernel groups and the CPU seconds each takes to compile with an empty cache on the
#: reference 2-core machine (bench/README.md, "First run"), quoted in the notice.
NOTICE_SECONDS = {
    "the exact-solution": 5,
    "the stiff-integrator": 10,
    "the trust-region": 12,
    "the matrix-exponential": 5,
    "the ensemble exact-solution": 2,
    "the ensemble stiff-integrator": 15,
}

_checked: set = set()    # dispatchers checked in this process (once each: a cheap test afterwards)
_printed: set = set()    # groups announced in this process


def needs_compilation(dispatcher) -> bool:
    """Whether ``dispatcher`` (a numba function with ``cache=True``) is neither compiled in
    this process nor held by numba's disk cache. False when numba's internals cannot tell."""
    try:
        if dispatcher.signatures:
            return False
        # numba's own index of cached versions: empty when missing or stale (the source changed)
        return not dispatcher._cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - numba internals moved: no notice rather than a failure
        return False


def announce_compilation(dispatcher, what: str, seconds: int | None = None) -> bool:
    """Print "kinetics: compiling WHAT kernels, once (about SECONDS s; cached for later
    runs)..." to stderr if :func:`needs_compilation` says so for ``dispatcher``, the kernel the
    caller is about to run. Call it before every call of the kernel: each dispatcher is checked
    once per process (later calls cost a set lookup) and each group (``what``) printed at most
    once per process. Returns whether the notice was printed. ``seconds`` defaults to the
    group's entry in :data:`NOTICE_SECONDS`."""
    if dispatcher in _checked:
        return False
    _checked.add(dispatcher)
    if what in _printed or not needs_compilation(dispatcher):
        return False
    _printed.add(what)
    if seconds is None:
        seconds = NOTICE_SECONDS[what]
    print(f"kinetics: compiling {what} kernels, once (about {seconds} s; cached for later runs)...",
          file=sys.stderr, flush=True)
    return True
