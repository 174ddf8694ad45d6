"""The layering of functional/ and callbacks/, checked on the source (an AST walk, nothing imported):

* no module under ``functional/`` imports Lightning, nor any part of the package above it;
* no module under ``callbacks/`` imports a method;
* a callback imports no sibling callback module except the shared masking adapter;
* no code reads a private attribute of a trainer, module, loop, strategy or data source;
* ``Scope``/``check_scope`` are defined once; every callback is exported once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "lightning_unlearn"
FUNCTIONAL = sorted((PACKAGE / "functional").glob("*.py"))
CALLBACKS = sorted((PACKAGE / "callbacks").glob("*.py"))

#: Names under which code holds Lightning objects; ``<one of these>._x`` reads a private attribute.
LIGHTNING_OBJECTS = {
    "trainer", "_trainer", "pl_module", "lightning_module", "fit_loop", "epoch_loop", "loop", "strategy",
    "datamodule", "data_source", "_data_source", "accelerator", "precision_plugin",
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path`` (relative imports resolved)."""
    package = "lightning_unlearn." + ".".join(path.relative_to(PACKAGE).parent.parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out += [(node.lineno, base)]
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return out


def private_lightning_reads(path: Path) -> list[str]:
    """``<Lightning object>._private`` attribute reads in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        holder = node.value
        name = holder.id if isinstance(holder, ast.Name) else holder.attr if isinstance(holder, ast.Attribute) else None
        if name in LIGHTNING_OBJECTS:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_walk_sees_the_modules():
    assert {"masks.py", "pruning.py", "unpruning.py", "projection.py", "saliency.py"} <= {p.name for p in FUNCTIONAL}
    assert {"masking.py", "magnitude_pruning.py", "unpruning.py"} <= {p.name for p in CALLBACKS}


@pytest.mark.parametrize("path", FUNCTIONAL, ids=lambda p: p.name)
def test_functional_is_pure_torch(path):
    allowed = ("lightning_unlearn.functional", "lightning_unlearn.validation")
    for line, module in imported_modules(path):
        root = module.split(".")[0]
        assert root not in ("lightning", "pytorch_lightning", "lightning_fabric"), f"{path.name}:{line} imports {module}"
        if root == "lightning_unlearn":
            assert module.startswith(allowed) or module == "lightning_unlearn", f"{path.name}:{line} imports {module}"


@pytest.mark.parametrize("path", CALLBACKS, ids=lambda p: p.name)
def test_callbacks_import_no_method_and_no_sibling_but_the_masking_adapter(path):
    for line, module in imported_modules(path):
        assert not module.startswith("lightning_unlearn.methods"), f"{path.name}:{line} imports {module}"
        if path.name == "__init__.py" or not module.startswith("lightning_unlearn.callbacks."):
            continue
        sibling = module.split(".")[2]
        assert sibling == "masking", f"{path.name}:{line} imports the sibling callback module {module}"


@pytest.mark.parametrize("path", FUNCTIONAL + CALLBACKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_lightning_attribute_is_read(path):
    assert private_lightning_reads(path) == []


def test_the_private_attribute_check_catches_what_it_should(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(trainer, pl_module, self):\n    trainer.fit_loop._data_source\n    pl_module._trainer\n    self._mine\n")
    assert [f.split(": ")[1] for f in private_lightning_reads(probe)] == ["trainer.fit_loop._data_source", "pl_module._trainer"]


def test_scope_is_defined_once_and_classes_have_one_import_path():
    definitions = []
    for path in FUNCTIONAL + CALLBACKS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "check_scope":
                definitions.append(path.name)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "Scope" for t in node.targets):
                definitions.append(path.name)
    assert definitions == ["masks.py", "masks.py"]

    import lightning_unlearn.callbacks as callbacks
    import lightning_unlearn.functional as functional

    assert len(functional.__all__) == len(set(functional.__all__)) and "MaskedParameters" in functional.__all__
    assert "MaskedParameters" not in callbacks.__all__ and not hasattr(callbacks, "MaskedParameters")
    for name in callbacks.__all__:
        assert getattr(callbacks, name).__module__.startswith("lightning_unlearn.callbacks."), name
