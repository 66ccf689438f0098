"""The README's main job, on a tiny zoo: builds it, trains and tests both models, prints the table."""

import math

from nfn_lab.apps.main_job import format_table, main, run_main_job


def test_main_job_end_to_end(tmp_path, capsys):
    results = run_main_job(tmp_path / "zoo", tmp_path / "runs", epochs=1, num_networks=16, wandb="disabled")
    assert [r.name for r in results] == ["NFN (HNP)", "StatNN"]
    for r in results:
        assert all(math.isfinite(v) for v in (r.kendall_tau, r.r2, r.l1))
        assert -1 <= r.kendall_tau <= 1 and r.l1 >= 0
        assert r.scatter is not None and r.scatter.exists()
        assert (r.log_dir / "config.yaml").exists()
    table = format_table(results)
    assert "Kendall tau" in table and "StatNN" in table and str(results[0].scatter) in table
    # A second run reuses the zoo instead of rebuilding it.
    assert (
        main(
            ["--zoo", str(tmp_path / "zoo"), "--runs", str(tmp_path / "runs2"), "--epochs", "1", "--wandb", "disabled"]
        )
        == 0
    )
    assert "Using the digits CNN zoo" in capsys.readouterr().out


def test_main_job_rejects_bad_arguments(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--epochs", "0"])
    assert "--epochs must be" in capsys.readouterr().err


def test_main_job_names_a_missing_experiments_folder(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit, match="not found; run from the repository root or pass --experiments"):
        main(["--zoo", str(tmp_path / "zoo"), "--experiments", str(tmp_path / "nowhere")])
    assert not (tmp_path / "zoo").exists()  # fails before building anything
