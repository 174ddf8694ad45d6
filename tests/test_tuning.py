"""The oracle-free tuner: its scores against independent computations, its targets and gaps by
hand, the search on digits within its budget (every trial kept, the best feasible one chosen),
the sample counter, and ``lightning-unlearn tune`` end to end."""

import copy
import json

import pytest
import torch
import yaml

from lightning_unlearn.benchmark import MethodSpec
from lightning_unlearn.benchmark.tuning import (
    SampleCounter,
    _loss_auc,
    oracle_free_gap,
    oracle_free_scores,
    oracle_free_targets,
    tune_row,
)
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import SSD, FineTune, RandomLabel
from lightning_unlearn.metrics import evaluate
from tests.conftest import quiet_trainer


def test_loss_auc_equals_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    member = torch.randn(50, generator=g).round(decimals=1)  # ties included
    heldout = (torch.randn(70, generator=g) + 0.5).round(decimals=1)
    pairs = (member[:, None] < heldout[None, :]).double() + 0.5 * (member[:, None] == heldout[None, :]).double()
    assert _loss_auc(member, heldout) == pytest.approx(float(pairs.mean()), abs=1e-12)
    assert _loss_auc(torch.zeros(3), torch.ones(4)) == 1.0 and _loss_auc(torch.ones(3), torch.ones(4)) == 0.5


def test_scores_agree_with_the_evaluation(original, digits_classwise, digits_random):
    for dm in (digits_classwise, digits_random):
        scores = oracle_free_scores(original, dm, retain_limit=10_000)  # all of D_r: the evaluation's numbers
        reference = evaluate(original, dm)
        assert scores["ua"] == pytest.approx(100 * reference["unlearning_accuracy"], abs=1e-4)
        assert scores["ra"] == pytest.approx(100 * reference["retain_acc"], abs=1e-4)
        assert scores["ta"] == pytest.approx(100 * reference["test_acc"], abs=1e-4)
        assert scores["mia"] == pytest.approx(100 * reference["mia_efficacy"], abs=1e-4)
    classwise = oracle_free_scores(original, digits_classwise)
    x, y = next(iter(torch.utils.data.DataLoader(digits_classwise.test_set, batch_size=10_000)))
    rest = y != 3
    with torch.no_grad():
        expected = (original.eval()(x).argmax(1)[rest] == y[rest]).float().mean().item()
    assert classwise["ta_rest"] == pytest.approx(100 * expected, abs=1e-4)
    assert classwise["rest_share"] == pytest.approx(rest.float().mean().item())
    random = oracle_free_scores(original, digits_random)
    assert {"mia_forget", "mia_heldout", "loss_auc"} <= set(random) and "ta_rest" not in random


def test_targets_and_gaps_by_hand():
    original = {"ua": 0.0, "ra": 99.0, "ta": 95.0, "mia": 0.0, "ta_rest": 96.0, "rest_share": 0.9}
    targets = oracle_free_targets(original, classwise=True, max_drop=1.0)
    assert targets.ta == pytest.approx(86.4) and targets.ra == 99.0  # the forgotten class counted wrong
    trial = {"ua": 98.0, "ra": 98.5, "ta": 86.0, "mia": 100.0, "ta_rest": 95.5}
    gap = oracle_free_gap(trial, targets)
    assert gap["parts"] == pytest.approx({"ua": 2.0, "ra": 0.5, "ta": 0.4, "mia": 0.0})
    assert gap["score"] == pytest.approx(2.9 / 4) and gap["feasible"]
    assert not oracle_free_gap({**trial, "ta_rest": 94.9}, targets)["feasible"]  # other classes dropped > 1 point

    targets = oracle_free_targets({**original, "ta": 90.0}, classwise=False, max_drop=0.5)
    trial = {"ua": 12.0, "ra": 98.6, "ta": 89.6, "mia_forget": 14.0, "mia_heldout": 11.0, "loss_auc": 52.0}
    gap = oracle_free_gap(trial, targets)
    assert gap["parts"] == pytest.approx({"ua": 1.6, "ra": 0.4, "ta": 0.4, "mia": 3.0, "loss": 2.0})
    assert gap["feasible"] and not oracle_free_gap({**trial, "ra": 98.4}, targets)["feasible"]


def test_sample_counter_counts_epochs_of_d(original, digits_random):
    counter = SampleCounter()
    quiet_trainer(max_epochs=2, callbacks=[counter]).fit(RandomLabel(copy.deepcopy(original)), datamodule=digits_random)
    assert counter.samples == {"forget": 2 * 144, "retain": 2 * 1293}  # the sequential plan: each example once an epoch
    assert counter.epochs_equivalent(digits_random) == pytest.approx(2.0)
    counter = SampleCounter()
    quiet_trainer(max_epochs=1, callbacks=[counter]).fit(SSD(copy.deepcopy(original), alpha=2.0), datamodule=digits_random)
    assert counter.samples == {"forget": 144, "retain": 1293}  # a one-shot edit uses each split once
    counter = SampleCounter()
    quiet_trainer(max_epochs=1, limit_train_batches=0.5, callbacks=[counter]).fit(
        FineTune(copy.deepcopy(original)), datamodule=digits_random
    )
    assert counter.samples == {"retain": 10 * 64}  # int(0.5 * 21) batches of ceil(1293 / 64) = 21: retain subsampling


def test_tune_row_searches_within_its_budget_and_keeps_every_trial(original):
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    spec = MethodSpec("gradient_ascent", 2, {"lr": 0.003})
    result = tune_row(spec, original, dm, budget=20.0, retrain_seconds=1.0, progress=False, name="ga")
    trials = [t for t in result["trials"] if "rejected" not in t]
    assert result["budget_s"] == 20.0 and result["stopped"] == "search done"
    lrs = sorted({t["init_args"]["lr"] for t in trials})
    assert 0.003 in lrs and 0.001 in lrs and 0.009 in lrs and len(lrs) >= 5  # factors of 3, then sqrt(3)
    assert {t["max_epochs"] for t in trials} == {1, 2}  # a constant-lr row: every epoch count read from one fit
    feasible = [t for t in trials if t["feasible"]]
    best = min(feasible or trials, key=lambda t: (round(t["score"], 2), t["runtime_s"]))
    assert result["chosen"] == {k: best[k] for k in ("method", "max_epochs", "init_args")}
    assert result["chosen_trial"]["score"] == best["score"]
    json.dumps(result)  # every trial is JSON
    assert result["targets"]["classwise"] and result["original"]["ua"] < 5

    tight = tune_row(spec, original, dm, budget=1e-6, retrain_seconds=1.0, progress=False)
    assert tight["stopped"] == "budget" and len({t["init_args"]["lr"] for t in tight["trials"]}) == 1  # one fit, then stop


def test_tune_row_tries_the_extra_knobs_and_records_rejections(original):
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    result = tune_row(MethodSpec("ssd", 1, {"alpha": 5.0}), original, dm, budget=50.0, retrain_seconds=1.0, progress=False)
    assert sorted(t["init_args"]["alpha"] for t in result["trials"] if "rejected" not in t) == [1.0, 2.0, 5.0]
    assert [t["init_args"]["alpha"] for t in result["trials"] if "rejected" in t] == [10.0]  # selects nothing here


def test_cli_tune_writes_trials_and_rows(tmp_path, capsys):
    from lightning_unlearn.benchmark import resolve_preset
    from lightning_unlearn.cli import main

    config = yaml.safe_load(open(resolve_preset("quickstart")))
    config["original"]["max_epochs"] = 2
    config["accelerator"] = "cpu"
    config["data"]["init_args"]["forget"] = {"classes": [3]}
    config["methods"] = {
        "retrain": config["methods"]["retrain"],
        "ga": {"method": "gradient_ascent", "max_epochs": 1, "init_args": {"lr": 0.01}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    main(
        [
            "tune",
            "--config",
            str(path),
            "--budget",
            "0.3",
            "--no-progress",
            "--output",
            str(tmp_path / "t.json"),
            "--write-rows",
            str(tmp_path / "rows.yaml"),
        ]
    )
    result = json.loads((tmp_path / "t.json").read_text())
    assert list(result["rows"]) == ["ga"] and result["rows"]["ga"]["trials"]
    rows = yaml.safe_load((tmp_path / "rows.yaml").read_text())["methods"]
    assert rows["ga"] == result["chosen"]["ga"] and "ga: {" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["tune", "--config", str(path), "--rows", "retrain", "--no-progress"])


def test_sample_counter_counts_what_scrub_uses(original, digits_random):
    from lightning_unlearn.methods import SCRUB

    counter = SampleCounter()
    quiet_trainer(max_epochs=3, callbacks=[counter]).fit(SCRUB(copy.deepcopy(original), msteps=2), datamodule=digits_random)
    assert counter.samples == {"forget": 2 * 144, "retain": 3 * 1293}  # max-steps over D_f in the first 2 epochs only


def test_carried_over_rows_are_costed_by_the_counters_rule(original, digits_random):
    """benchmarks/quality.py's rule for rows measured before the counter existed agrees with it."""
    from benchmarks.quality import epochs_of_d
    from lightning_unlearn.methods import NegGradPlus

    counter = SampleCounter()
    quiet_trainer(max_epochs=2, callbacks=[counter]).fit(NegGradPlus(copy.deepcopy(original)), datamodule=digits_random)
    forget = digits_random.forget_summary()
    rule = epochs_of_d({"method": "neggrad_plus", "max_epochs": 2, "init_args": {}}, forget, 64, 64)
    assert counter.epochs_equivalent(digits_random) == pytest.approx(rule)
    assert epochs_of_d({"method": "scrub", "max_epochs": 3, "init_args": {}}, forget, 64, 64) == pytest.approx(
        (2 * 144 + 3 * 1293) / 1437
    )
