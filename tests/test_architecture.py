"""The package's import graph, read from its AST: layers import downward only (DESIGN.md).

Layers, lowest first (a module may import its own layer's package and any lower layer):

====  ===========================================  ==========================================
0     ``validation``, ``functional``, ``metrics``   pure torch: no ``lightning`` import at all
      (``metrics`` may use ``functional``; not back)
1     ``data``, ``models``, ``report``, ``registry``
2     ``methods``, ``callbacks``                    a callback never imports a method, nor a
                                                    sibling callback but ``callbacks.masking``
3     ``benchmark``
4     ``cli``
====  ===========================================  ==========================================

The registry imports methods and callbacks lazily, inside the function that lists them; nothing
else imports upward, not even lazily. No code reads a private Lightning attribute
(``._something`` on a trainer, a module, a loop, a strategy or a data source).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_unlearn"
LAYERS = {
    "validation": 0,
    "functional": 0,
    "metrics": 0,
    "data": 1,
    "models": 1,
    "report": 1,
    "registry": 1,
    "methods": 2,
    "callbacks": 2,
    "benchmark": 3,
    "cli": 4,
}
LAZY_UPWARD = {("registry", "methods"), ("registry", "callbacks")}  # the registry lists them
PRIVATE_OWNERS = ("trainer", "loop", "data_source", "fit_loop")


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def imports(path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of the file (module level and lazy)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
            out += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def internal_part(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "lightning_unlearn" and len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_has_a_layer() -> None:
    unknown = {part_of(p) for p in modules()} - set(LAYERS) - {"__init__"}
    assert not unknown, f"modules outside the layer table: {unknown}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path: Path) -> None:
    part = part_of(path)
    if part == "__init__":
        return
    for name, line in imports(path):
        if LAYERS[part] == 0:
            assert name.split(".")[0] not in ("lightning", "pytorch_lightning"), f"{path.name}:{line} imports {name}"
        target = internal_part(name)
        if target is None or target == part:
            continue
        if (part, target) in LAZY_UPWARD:
            continue
        assert LAYERS[target] <= LAYERS[part], f"{path.relative_to(PACKAGE)}:{line} imports {name} (layer {target} > {part})"
        if part == "functional":
            assert target in ("validation", "functional"), f"{path.name}:{line}: functional/ imports {name}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "callbacks").glob("*.py")), ids=lambda p: p.name)
def test_callbacks_import_no_method_and_no_sibling_but_masking(path: Path) -> None:
    for name, line in imports(path):
        assert not name.startswith("lightning_unlearn.methods"), f"{path.name}:{line} imports {name}"
        if name.startswith("lightning_unlearn.callbacks.") and path.name != "__init__.py":
            module = name.split(".")[2]
            assert module == "masking" or module == path.stem, f"{path.name}:{line} imports sibling callback {name}"


#: Names under which code holds Lightning objects; ``<one of these>._x`` reads a private attribute.
LIGHTNING_OBJECTS = {
    "trainer",
    "_trainer",
    "pl_module",
    "lightning_module",
    "fit_loop",
    "epoch_loop",
    "loop",
    "strategy",
    "datamodule",
    "data_source",
    "_data_source",
    "accelerator",
    "precision_plugin",
}


def private_lightning_reads(path: Path) -> list[str]:
    """``<Lightning object>._private`` attribute reads in ``path`` (``self._x`` is a class's own)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        holder = node.value
        name = holder.id if isinstance(holder, ast.Name) else holder.attr if isinstance(holder, ast.Attribute) else None
        if name in LIGHTNING_OBJECTS:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_lightning_attribute_is_read(path: Path) -> None:
    assert private_lightning_reads(path) == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checks above can fail: a planted upward import and private reads are found."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from lightning_unlearn.methods import FineTune\n"
        "def f(trainer, pl_module, self):\n    trainer.fit_loop._data_source\n    pl_module._trainer\n    self._mine\n"
    )
    assert ("lightning_unlearn.methods", 1) in imports(bad)
    assert [f.split(": ")[1] for f in private_lightning_reads(bad)] == ["trainer.fit_loop._data_source", "pl_module._trainer"]


def test_scope_is_defined_once() -> None:
    definitions = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "check_scope":
                definitions.append(path.name)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "Scope" for t in node.targets):
                definitions.append(path.name)
    assert definitions == ["masks.py", "masks.py"]


def test_one_import_path_per_public_class() -> None:
    """Each public class is exported by exactly one subpackage ``__all__``."""
    import importlib

    seen: dict[int, str] = {}
    for sub in ("data", "methods", "callbacks", "metrics", "models", "functional"):
        package = importlib.import_module(f"lightning_unlearn.{sub}")
        assert len(package.__all__) == len(set(package.__all__)), sub
        for name in package.__all__:
            obj = getattr(package, name)
            if isinstance(obj, type):
                assert id(obj) not in seen, f"{name} exported by {seen.get(id(obj))} and {sub}"
                assert obj.__module__.startswith(f"lightning_unlearn.{sub}"), f"{name} is defined outside {sub}"
                seen[id(obj)] = sub
