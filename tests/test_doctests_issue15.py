"""The docstring examples of the sequential, analytic, hardness, repulsion and language-model parts run."""

import doctest
import importlib

import pytest

MODULES = [
    "lightning_unlearn.functional.analytic", "lightning_unlearn.functional.consolidation",
    "lightning_unlearn.functional.hardness", "lightning_unlearn.functional.repulsion",
    "lightning_unlearn.metrics.relapse", "lightning_unlearn.metrics.language",
    "lightning_unlearn.data.requests", "lightning_unlearn.data.text", "lightning_unlearn.models.tiny_lm",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
