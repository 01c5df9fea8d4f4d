"""The background compilation of a kernel group (see :func:`kinetics.numerics.compile_notice.use_compiled`).

``python -m kinetics.numerics.precompile GROUP [LOCK]`` compiles GROUP's kernels into numba's disk
cache at low priority by running them once on a tiny problem, then removes the lock file LOCK.
Nothing imports this module: it is the program a process starts instead of compiling itself.
"""

from __future__ import annotations

import contextlib
import os
import sys

from . import trust_region


#: group (as in compile_notice.BACKGROUND_GROUPS) -> what compiles it
COMPILERS = {"the trust-region": trust_region.compile_kernels}


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMPILERS:
        print(f"usage: python -m kinetics.numerics.precompile GROUP [LOCK]; GROUP one of {sorted(COMPILERS)}",
              file=sys.stderr)
        return 2
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)     # the user's own work comes first
    try:
        COMPILERS[args[0]]()
    finally:
        if len(args) > 1:
            with contextlib.suppress(OSError):
                os.remove(args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
