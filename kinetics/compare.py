"""Moved to :mod:`kinetics.analysis.compare`; this old import path stays as a re-export.

``kinetics.compare`` is the function :func:`kinetics.analysis.compare.compare`; once this module
is imported, Python sets the package attribute to the module, which is callable as the
function too (see :mod:`kinetics.fit`)."""

import inspect
import sys
import types

from .analysis.compare import Comparison, akaike_weights, compare

__all__ = ["compare", "Comparison", "akaike_weights"]


class CallableModule(types.ModuleType):
    """This module, callable as :func:`compare`."""

    def __call__(self, *args, **kwargs):
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = CallableModule
__signature__ = inspect.signature(compare)
