"""The examples in the audit modules' docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "lightning_unlearn.metrics.attacks", "lightning_unlearn.metrics.functional.attacks",
    "lightning_unlearn.metrics.population", "lightning_unlearn.metrics.functional.population",
    "lightning_unlearn.metrics.representation", "lightning_unlearn.metrics.functional.representation",
    "lightning_unlearn.metrics.audit", "lightning_unlearn.metrics.keys", "lightning_unlearn.report.audit",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
