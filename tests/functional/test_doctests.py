"""The examples in the functional cores' docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["features", "labels", "masks", "per_sample", "projection", "pruning", "quantization", "relearn", "saliency", "unpruning"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"lightning_unlearn.functional.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
