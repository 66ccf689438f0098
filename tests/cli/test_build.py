"""``nfn-lab zoo build cnn|inr`` driven in-process through the real ``nfn-lab`` entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nfn_lab.cli import build as cli
from nfn_lab.cli import main
from nfn_lab.data.card import read_zoo_info


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_build_cnn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cnn"
    argv = ["zoo", "build", "cnn", str(out), "--num-networks", "3", "--steps", "0,1", "--seed", "5", "--quiet"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    info = read_zoo_info(out)
    assert sum(info.splits.values()) == 3 * 2
    assert info.provenance["command"] == "nfn-lab zoo build " + " ".join(argv[2:])
    assert info.provenance["config"]["seed"] == 5 and info.provenance["config"]["steps"] == [0, 1]

    assert main(argv) == 1  # the output exists: refused, with the flag to pass
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--small-cnn-zoo-layout"]) == 0
    assert (out / "small_cnn_zoo" / "weights.npy").is_file()


def test_build_inr_from_a_tensor_file(tmp_path: Path) -> None:
    images = tmp_path / "images.pt"
    torch.save({"images": torch.rand(3, 1, 5, 5), "labels": torch.tensor([0, 1, 1])}, images)
    out = tmp_path / "inr"
    argv = ["zoo", "build", "inr", str(out), "--images", str(images), "--variant", "dwsnets", "--steps", "5", "--quiet"]
    assert main(argv) == 0
    info = read_zoo_info(out)
    assert info.provenance["variant"] == "dwsnets" and info.provenance["image_size"] == 5
    assert sum(info.splits.values()) == 3 and info.target_names == ("label", "psnr")


def test_bad_images_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "build", "inr", str(tmp_path / "inr"), "--images", str(tmp_path / "nowhere"), "--quiet"]) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_interrupt_points_to_the_work_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["cnn", str(tmp_path / "cnn")]) == 130
    assert f"{tmp_path / 'cnn.work'}: rerun the same command to resume" in capsys.readouterr().err
