"""scripts/device/run_digits.sh --smoke: every digits result file through the device orchestration, on the CPU."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_rehearsal_runs_every_result(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    result = subprocess.run(
        ["bash", "scripts/device/run_digits.sh", "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "digits_results.json").read_text())
    assert record["smoke"] is True
    assert set(record["table"]) == {p.stem for p in (REPO / "experiments" / "digits").glob("*.yaml")}
    for name, row in record["table"].items():
        assert row["status"] == "ok", (name, row)
        assert isinstance(row["value"], float), (name, row)
    assert (tmp_path / "digits_log_tail.txt").stat().st_size > 0
