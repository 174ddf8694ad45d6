"""Alias of :mod:`lightning_unlearn.data` (the design card's name for the same part)."""

from lightning_unlearn.data import *  # noqa: F401,F403
from lightning_unlearn.data import __all__  # noqa: F401
