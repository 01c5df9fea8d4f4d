"""A one-line notice on stderr before numba compiles a group of kernels that its disk cache does
not hold yet (a fresh install, a new numba or Python version), so that the one-off pause of the
first run is explained. Kernels compile lazily, when first used: a user who fits only affine
models never compiles the stiff integrator."""

from __future__ import annotations

import sys

__all__ = ["announce_compilation"]

_checked: set = set()


def announce_compilation(dispatcher, what: str, seconds: int) -> bool:
    """Print "kinetics: compiling WHAT kernels, once (about SECONDS s)..." to stderr if
    ``dispatcher`` (a numba function with ``cache=True``, the largest of the group) is neither
    compiled in this process nor in numba's disk cache; checked once per group and process.
    Returns whether the notice was printed."""
    if what in _checked:
        return False
    _checked.add(what)
    try:
        if dispatcher.signatures:
            return False
        # numba's own index of cached versions: empty when missing or stale (the source changed)
        if dispatcher._cache._cache_file._load_index():
            return False
    except Exception:  # noqa: BLE001 - numba internals moved: no notice rather than a failure
        return False
    print(f"kinetics: compiling {what} kernels, once (about {seconds} s; cached for later runs)...",
          file=sys.stderr, flush=True)
    return True
