"""Numerical kernels with no knowledge of models: arrays in, arrays out.

:mod:`.linear` (exact solutions of affine systems by eigen-decomposition, with sensitivities)
and its numba kernel :mod:`.linear_kernel`, :mod:`.rosenbrock` (the compiled stiff integrator),
:mod:`.tape_machine` (the interpreter of the instruction tapes :mod:`kinetics.codegen.tape`
builds from sympy), :mod:`.trust_region` (the compiled trust-region least-squares solver) and
:mod:`.jit` (the one optional-numba shim: ``numba_available``, the ``jit`` decorator every
kernel uses). Nothing here imports sympy or the model layers; :func:`kinetics.warm_up`
compiles every kernel ahead of first use. The package imports nothing eagerly: numba is slow
to import.
"""
