"""Code generation: turning the symbolic system of a model into something a machine runs.

:mod:`.lambdify` is the one place sympy expressions become Python/numpy callables (and the
printers they use); :mod:`.tape` compiles expressions to the register tapes the numba
integrator interprets (``build_tapes``: right-hand side, Jacobian, df/dt), run by
:mod:`kinetics.numerics.tape_machine`. Depends on sympy, numpy and that interpreter only; knows
nothing of simulation or fitting.
"""
