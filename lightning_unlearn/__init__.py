"""lightning-unlearn: machine unlearning for PyTorch Lightning.

Public API by subpackage (one import path per class): :mod:`lightning_unlearn.data` (requests and
datamodules), :mod:`lightning_unlearn.methods`, :mod:`lightning_unlearn.callbacks`,
:mod:`lightning_unlearn.metrics`, :mod:`lightning_unlearn.models`, :mod:`lightning_unlearn.functional`
(pure-torch cores) and :mod:`lightning_unlearn.benchmark` (compare).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
