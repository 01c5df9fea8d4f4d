"""Numerical kernels with no knowledge of models: arrays in, arrays out.

:mod:`.linear` (exact solutions of affine systems by eigen-decomposition, with sensitivities)
and its numba kernel :mod:`.linear_kernel`, :mod:`.rosenbrock` (the compiled stiff integrator
running :mod:`kinetics.codegen.tape` programs), :mod:`.trust_region` (the compiled
trust-region least-squares solver) and :mod:`.jit` (the one optional-numba shim and
:func:`~.jit.warm_up`). The package imports nothing eagerly: numba is slow to import.
"""
