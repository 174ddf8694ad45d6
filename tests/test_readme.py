"""The README's Python example runs as written (on digits) and does what it says."""

import copy
import json
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(original, digits_classwise, tmp_path, monkeypatch):
    code = re.search(r"```python\n(import lightning as L.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    before = copy.deepcopy(original.state_dict())
    namespace = {"train_ds": digits_classwise.train_set, "test_ds": digits_classwise.test_set,
                 "my_trained_classifier": original}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    report = json.loads((tmp_path / "unlearn_report.json").read_text())
    assert report["method"] == "RandomLabel" and report["forget"]["spec"]["classes"] == [3]
    assert report["metrics"]["after"]["forget_acc"] < 0.05 < report["metrics"]["before"]["forget_acc"]
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in before.items())  # untouched


def test_readme_starts_with_title_pitch_and_the_two_commands():
    """Title, one paragraph of pitch, then exactly the two commands (install + run the main job;
    install + run the tests, the line .ci/run calls)."""
    lines = README.read_text().splitlines()
    assert lines[0] == "# lightning-unlearn" and lines[1] == ""
    start = lines.index("```bash")
    pitch = lines[2:start]
    assert pitch[-1] == "" and "" not in pitch[:-1] and not any(line.startswith(("#", "```")) for line in pitch)
    assert lines[start + 3] == "```"
    assert "lightning-unlearn compare --config configs/quickstart.yaml" in lines[start + 1]
    assert "pytest" in lines[start + 2] and lines[start + 2] in Path(README.parent / ".ci/run").read_text()
