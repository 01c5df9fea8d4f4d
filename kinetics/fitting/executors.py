"""Executors for the fitting tasks (multi-start, profiles, sampling chains): which are accepted,
and the progress bar shown while their tasks finish."""

from __future__ import annotations

import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor

from ..errors import FitError

__all__ = ["EXECUTOR_CHOICES", "check_executor", "progress_bar", "run_tasks"]


def progress_bar(total, enabled, desc, unit):
    """A tqdm bar on stderr over ``total`` tasks, or None (disabled, one task, or no tqdm)."""
    if not enabled or total <= 1:
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
    except ImportError:
        return None


EXECUTOR_CHOICES = '"auto", None (serial), "process", or a concurrent.futures.Executor'


def check_executor(executor, origin, caller="fit"):
    """The executor as given, or FitError: anything else (a multiprocessing.Pool, "threads")
    would otherwise run the tasks serially without a word. ``caller`` names the function in the
    message."""
    if executor is None or isinstance(executor, Executor) or (isinstance(executor, str) and executor in ("auto", "process")):
        return executor
    what = repr(executor) if isinstance(executor, str) else f"a {type(executor).__module__}.{type(executor).__qualname__}"
    hint = ""
    if executor in ("thread", "threads"):
        hint = " For threads pass concurrent.futures.ThreadPoolExecutor(n)."
    elif hasattr(executor, "imap") or hasattr(executor, "apply_async"):
        hint = " A multiprocessing.Pool is not an Executor: pass concurrent.futures.ProcessPoolExecutor(n) instead."
    raise FitError(f"{origin}: {caller}(executor=...) got {what}; it must be {EXECUTOR_CHOICES} "
                   f"(ThreadPoolExecutor, ProcessPoolExecutor, or e.g. a dask client's get_executor()).{hint}")


def run_tasks(fn, tasks, executor, bar=None) -> list:
    """``[fn(task) for task in tasks]``, in order: on ``executor`` (an Executor, or "process" for a
    pool of this machine's cores, closed afterwards) when there is more than one task, else in
    this process. ``bar`` (see :func:`progress_bar`) advances as results arrive."""
    tasks = list(tasks)
    own_pool = None
    if executor == "process" and len(tasks) > 1:
        executor = own_pool = ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, len(tasks)))
    try:
        parallel = isinstance(executor, Executor) and len(tasks) > 1
        results = []
        for out in (executor.map(fn, tasks) if parallel else map(fn, tasks)):
            results.append(out)
            if bar:
                bar.update(1)
        return results
    finally:
        if own_pool is not None:
            own_pool.shutdown()
