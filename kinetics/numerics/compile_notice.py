"""The one first-use compile message: a line on stderr before numba compiles a group of kernels
that its disk cache does not hold yet (a fresh install, a new numba or Python version), so that
the one-off pause of the first run is explained.

Kernels compile lazily, when first used, group by group: a user who fits only affine models
never compiles the stiff integrator. Each group's entry point calls :func:`announce_compilation`
with its largest kernel; nothing else in kinetics prints about compilation (the command line
adds no note of its own), so a user sees one line per group that actually compiles and none
when the cache is filled.

Groups whose work scipy can do with the same algorithm (the trust region of the fits: scipy's
``least_squares``) need not make the first result wait: :func:`use_compiled` tells such a group's
entry point to run scipy's path this time while a separate, low-priority process compiles the
group into numba's disk cache (``python -m kinetics.numerics.precompile GROUP``); the calls after
it has finished load the compiled kernels. ``KINETICS_COMPILE=foreground`` (or
:func:`compiling_in_foreground`, which :func:`kinetics.warm_up` uses) compiles in the calling
process instead, as every other group does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time

from .jit import cache_dir

__all__ = ["announce_compilation", "needs_compilation", "use_compiled", "compiling_in_foreground",
           "compile_mode", "lock_path", "NOTICE_SECONDS", "BACKGROUND_GROUPS"]

#: The kernel groups and the CPU seconds each takes to compile with an empty cache on the
#: reference 2-core machine (bench/README.md, "First run"), quoted in the notice.
NOTICE_SECONDS = {
    "the exact-solution": 5,
    "the stiff-integrator": 14,
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


#: Groups with an equivalent scipy path, which may compile in a background process: group ->
#: what runs meanwhile (quoted in the notice).
BACKGROUND_GROUPS = {
    "the trust-region": "fits use scipy's least_squares (the same algorithm)",
}

#: A background compilation's lock older than this (seconds) is taken to be from a process that
#: died: a new one may start.
STALE_LOCK_SECONDS = 900

_foreground_depth = 0    # > 0 inside compiling_in_foreground()
_launched: set = set()   # groups this process has started a background compilation of


def compile_mode() -> str:
    """"background" or "foreground": how a group of :data:`BACKGROUND_GROUPS` that numba's
    cache lacks is compiled. From ``KINETICS_COMPILE`` (default "background"); always
    "foreground" inside :func:`compiling_in_foreground`."""
    if _foreground_depth:
        return "foreground"
    mode = os.environ.get("KINETICS_COMPILE", "background").strip().lower() or "background"
    if mode not in ("background", "foreground"):
        raise ValueError(f"KINETICS_COMPILE={mode!r}: use 'background' (the default) or 'foreground'")
    return mode


@contextlib.contextmanager
def compiling_in_foreground():
    """Within this block every kernel group compiles in the calling process when first used."""
    global _foreground_depth
    _foreground_depth += 1
    try:
        yield
    finally:
        _foreground_depth -= 1


def lock_path(dispatcher, what: str) -> str:
    """The lock file of a background compilation of group ``what`` (entry kernel ``dispatcher``)
    into the cache this process reads: one per group, kernel source, cache folder and Python, so
    that many processes starting at once (a process pool, Dask workers) start one compilation."""
    source = getattr(getattr(dispatcher, "py_func", None), "__code__", None)
    key = "|".join([what, getattr(source, "co_filename", ""), cache_dir(), sys.executable])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"kinetics-compile-{digest}.lock")


def _take_lock(path: str) -> bool:
    """Create the lock file; False when another process holds a fresh one."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - os.path.getmtime(path) < STALE_LOCK_SECONDS:
                    return False
                os.remove(path)     # left by a compilation that died
            except OSError:
                return False
            continue
        except OSError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def _start_background(dispatcher, what: str) -> bool:
    """Start ``python -m kinetics.numerics.precompile WHAT LOCK`` unless this or another process
    already did; True when a compilation is running (or was started by this process)."""
    if what in _launched:
        return True
    if not sys.executable:
        return False
    path = lock_path(dispatcher, what)
    if _take_lock(path):
        env = dict(os.environ, KINETICS_COMPILE="foreground")
        try:
            subprocess.Popen([sys.executable, "-m", "kinetics.numerics.precompile", what, path],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(path)
            return False
    _launched.add(what)
    return True


def use_compiled(dispatcher, what: str) -> bool:
    """Whether the caller should run ``dispatcher``, the entry kernel of group ``what``, now.

    True when it is compiled in this process or held by numba's disk cache, or when the group
    compiles in the foreground (:func:`compile_mode`, or a group not in
    :data:`BACKGROUND_GROUPS`): then :func:`announce_compilation` has printed its notice. False
    when the caller should take its scipy path this time: a background process is compiling
    the group (started here if none is), and a line on stderr says so once per process. Cheap
    to call before every use: once the cache holds the group, the calls after return True."""
    if what not in BACKGROUND_GROUPS or not needs_compilation(dispatcher) or compile_mode() == "foreground":
        announce_compilation(dispatcher, what)
        return True
    if not _start_background(dispatcher, what):
        announce_compilation(dispatcher, what)
        return True
    if what not in _printed:
        _printed.add(what)
        print(f"kinetics: compiling {what} kernels in the background, once (about "
              f"{NOTICE_SECONDS[what]} s; cached for later runs); until then {BACKGROUND_GROUPS[what]}",
              file=sys.stderr, flush=True)
    return False
