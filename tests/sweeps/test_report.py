"""The results table: trials best first, pruned after finished, failed last; CSV and markdown."""

import csv

import optuna
import pytest
from optuna.trial import TrialState

from nfn_lab.sweeps.report import results_table, study_records, write_results
from tests.sweeps.helpers import LR


@pytest.mark.parametrize(
    ("goal", "order"), [("maximize", ["c", "a", "b", "f", "d", "e"]), ("minimize", ["b", "a", "c", "f", "d", "e"])]
)
def test_results_table_is_sorted_by_the_goal(tmp_path, goal, order):
    """Finished trials by value, then pruned ones (whatever their value), then the rest in trial order."""
    records = [
        {"trial": "a", "status": "done", "value": 0.5, "epochs": 3, "overrides": {LR: 0.1}},
        {"trial": "d", "status": "running", "value": None, "epochs": 1, "overrides": {LR: 0.2}},
        {"trial": "b", "status": "done", "value": 0.25, "epochs": 3, "overrides": {LR: 0.3}},
        {"trial": "e", "status": "failed", "value": None, "epochs": 0, "overrides": {LR: 0.4}},
        {"trial": "c", "status": "done", "value": 0.75, "epochs": 3, "overrides": {LR: 0.5}},
        {"trial": "f", "status": "pruned", "value": 0.9 if goal == "maximize" else 0.1, "epochs": 1, "overrides": {}},
    ]
    rows = results_table(records, [LR], goal)
    assert [r["trial"] for r in rows] == order and [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    markdown = write_results(tmp_path, rows, "val/acc", [LR])
    assert markdown.splitlines()[0] == "| rank | trial | status | val/acc | epochs | lr |"
    assert [line.split(" | ")[1] for line in markdown.splitlines()[2:]] == order
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == order and table[0][LR] == repr(rows[0][LR])
    assert (tmp_path / "results.md").read_text() == markdown


def test_study_records(tmp_path):
    study = optuna.create_study(direction="maximize")
    done = study.ask()
    done.suggest_float(LR, 0.0, 1.0)
    done.set_user_attr("overrides", {LR: 0.5, "fixed": 1})
    done.report(0.2, 1)
    study.tell(done, 0.4)
    pruned = study.ask()
    pruned.report(0.3, 1)
    pruned.report(0.1, 2)
    study.tell(pruned, state=TrialState.PRUNED)
    study.enqueue_trial({})  # waiting: not started, not shown
    records = study_records(study)
    assert [(r["trial"], r["status"], r["value"], r["epochs"]) for r in records] == [
        ("trial-0000", "done", 0.4, 1),
        ("trial-0001", "pruned", 0.3, 2),  # the best value it reached
    ]
    assert records[0]["overrides"] == {LR: 0.5, "fixed": 1}
