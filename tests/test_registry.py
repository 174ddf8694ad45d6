"""Generic tests over the registry: every registered method trains on digits and resumes exactly
from a checkpoint; every entry has a method card. A new method passes these by registering."""

import copy

import pytest
import torch

from lightning_unlearn import registry
from tests.conftest import assert_same_state, required_args, run_and_resume

METHODS = [e.name for e in registry.entries("method")]
CALLBACKS = [e.name for e in registry.entries("callback")]


def test_registry_lists_the_base_methods():
    assert {"retrain", "finetune", "gradient_ascent", "neggrad_plus", "random_label"} <= set(METHODS)
    assert "evaluation" in CALLBACKS


@pytest.mark.parametrize("name", METHODS + CALLBACKS)
def test_every_entry_has_a_method_card(name):
    entry = registry.get(name)
    doc = entry.cls.__doc__ or ""
    assert entry.paper and entry.cost and len(doc) > 200
    if entry.kind == "method":
        assert set(entry.inputs) <= {"forget", "retain"} and entry.inputs


@pytest.mark.parametrize("name", METHODS)
def test_method_resumes_exactly_from_a_checkpoint(name, original, digits_classwise, tmp_path):
    cls = registry.get(name).cls
    required = required_args(name)
    straight, resumed, _ = run_and_resume(lambda: cls(copy.deepcopy(original), **required), digits_classwise, tmp_path)
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert any(not torch.equal(v, original.state_dict()[k]) for k, v in straight.model.state_dict().items())


def test_readme_method_table_is_the_registry_and_the_command_prints_it():
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("<!-- method-table:start -->")[1].split("<!-- method-table:end -->")[0].strip()
    assert table == registry.markdown_table(), "README's method table is stale: python -m lightning_unlearn.registry"
    printed = subprocess.run([sys.executable, "-m", "lightning_unlearn.registry"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == table
