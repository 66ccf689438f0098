"""``nfn-lab zoo info`` / ``convert`` / ``build`` and the ``nfn-lab`` entry point, run in-process."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.arrow_zoo import ArrowZooDataModule
from nfn_lab import cli
from nfn_lab.cli import zoo as zoo_cli
from nfn_lab.data import formats
from nfn_lab.data.arrow_container import zoo_layout
from nfn_lab.data.card import read_zoo_info
from nfn_lab.data.zoo import ZooDataModule
from nfn_lab.weightspace import collate
from tests.data.arrow_zoo.generate import METADATA, GeneratedArrowZoo, generate


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> GeneratedArrowZoo:
    return generate(tmp_path_factory.mktemp("arrow") / "zoo")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(["zoo", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def whole_split(datamodule: ZooDataModule, split: str):
    dataset = datamodule.make_dataset(split, None)
    return next(iter(DataLoader(dataset, batch_size=len(dataset), collate_fn=collate)))


def assert_same_zoo(source: ZooDataModule, converted: Path) -> None:
    target = ArrowZooDataModule(converted)
    assert target.network_spec == source.network_spec
    for split in source.splits:
        (fa, ta), (fb, tb) = whole_split(source, split), whole_split(target, split)
        assert all(torch.equal(x, y) for x, y in zip([*fa.weights, *fa.biases], [*fb.weights, *fb.biases]))
        assert ta.keys() == tb.keys()
        assert all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


# --- info -------------------------------------------------------------------------------------------------
def test_info_describes_an_arrow_zoo(zoo, capsys) -> None:
    status, out, _ = run(capsys, "info", str(zoo.root))
    assert status == 0
    assert "format_name: arrow_zoo" in out and "arrow layout" in out
    assert '"train": 12' in out and "num_networks: 11" in out and "test_accuracy" in out
    assert "builder: tests.data.arrow_zoo.generate" in out and "size_on_disk:" in out
    status, out, _ = run(capsys, "info", str(zoo.root), "--json")
    info = json.loads(out)
    assert info["num_checkpoints"] == 22 and info["splits"] == {"train": 12, "val": 4, "test": 6}
    assert info["network_spec"] == zoo.network_spec.to_dict()
    assert info["size_on_disk"] == sum(p.stat().st_size for p in zoo.root.rglob("*") if p.is_file())


def test_formats_come_from_the_registry(zoo, capsys, monkeypatch) -> None:
    monkeypatch.setattr(formats, "_registered", {})
    formats.register_format("broken", "nowhere.Zoo")  # one broken format does not hide the others
    status, out, err = run(capsys, "info", str(zoo.root))
    assert status == 0 and "format_name: arrow_zoo" in out
    assert "nfn-lab zoo: warning: skipping format 'broken' (ImportError: cannot import" in err
    _, cls = zoo_cli.resolve_format(Path("."), "datamodules.arrow_zoo.ArrowZooDataModule")  # a class path
    assert cls is ArrowZooDataModule


def test_info_errors(zoo, tmp_path, capsys) -> None:
    status, _, err = run(capsys, "info", str(tmp_path / "missing"))
    assert status == 1 and "missing: no such file or folder" in err
    status, _, err = run(capsys, "info", str(tmp_path))
    assert status == 1 and "is not a zoo in any known format (" in err and "arrow_zoo" in err
    status, _, err = run(capsys, "info", str(zoo.root), "--format", "keras")
    assert status == 1 and "unknown format 'keras'; known formats: " in err and "arrow_zoo" in err
    status, _, err = run(capsys, "info", str(zoo.root), "--format", "nowhere.Zoo")
    assert status == 1 and "cannot import the format class 'nowhere.Zoo'" in err


# --- convert ----------------------------------------------------------------------------------------------
def test_convert_arrow_to_arrow_and_parquet(zoo, tmp_path, capsys) -> None:
    status, out, _ = run(capsys, "convert", str(zoo.root), str(tmp_path / "copy"), "--quiet")
    assert status == 0 and f"wrote {tmp_path / 'copy'}" in out
    assert_same_zoo(ArrowZooDataModule(zoo.root), tmp_path / "copy")
    info = read_zoo_info(tmp_path / "copy")
    assert info.metadata_columns == ("source_index", *METADATA)
    assert info.provenance["source_format"] == "arrow_zoo"
    assert info.provenance["source_path"] == str(zoo.root.resolve())
    copy = ArrowZooDataModule(tmp_path / "copy").make_dataset("train", None)
    written = {k: v[5:7] for k, v in zoo.metadata["train"].items()}
    assert copy.read_metadata([5, 6]) == {"source_index": [5, 6], **written}
    status, _, _ = run(capsys, "convert", str(zoo.root), str(tmp_path / "hub"), "--parquet", "--quiet")
    assert status == 0 and zoo_layout(tmp_path / "hub") == "parquet"
    status, out, _ = run(capsys, "info", str(tmp_path / "hub"), "--json")
    assert json.loads(out)["num_networks"] == 11 and "parquet layout" in json.loads(out)["format"]


def test_convert_refuses_a_non_empty_destination(zoo, tmp_path, capsys) -> None:
    dst = tmp_path / "dst"
    generate(dst, sizes={"train": 2})
    before = read_zoo_info(dst)
    status, _, err = run(capsys, "convert", str(zoo.root), str(dst), "--quiet")
    assert status == 1 and "exists and is not empty" in err and "--overwrite" in err
    assert read_zoo_info(dst) == before
    status, _, _ = run(capsys, "convert", str(zoo.root), str(dst), "--quiet", "--overwrite")
    assert status == 0 and read_zoo_info(dst).splits == {"train": 12, "val": 4, "test": 6}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_convert_bad_arguments(zoo, tmp_path, capsys) -> None:
    status, _, err = run(capsys, "convert", str(zoo.root), str(tmp_path / "x"), "--arg", "target")
    assert status == 1 and "--arg takes KEY=VALUE" in err
    status, _, err = run(capsys, "convert", str(zoo.root), str(tmp_path / "x"), "--arg", "target=accuracy", "--quiet")
    assert status == 1 and "unknown targets ['accuracy']" in err
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


def _small_cnn_zoo(root: Path) -> list[str]:
    importlib.import_module("tests.data.small_cnn_zoo.generate").generate(root, num_networks=12)
    return ["--format", "small_cnn_zoo"]


def _nfn_siren(root: Path) -> list[str]:
    importlib.import_module("tests.data.nfn_siren.generate").generate(root, num_images=10, aug_copies=1, steps=2)
    return ["--format", "nfn_siren", "--arg", "split_points=[6, 8]"]


def _dwsnets_inr(root: Path) -> list[str]:
    importlib.import_module("tests.data.dwsnets_inr.generate").generate_mnist(root, steps=2)
    return ["--format", "dwsnets_inr", "--arg", "splits_file=mnist_splits.json"]


@pytest.mark.parametrize("write", [_small_cnn_zoo, _nfn_siren, _dwsnets_inr], ids=lambda f: f.__name__[1:])
def test_convert_public_formats_exactly(write, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    args = write(src)
    status, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"), *args, "--quiet")
    assert status == 0, err
    name, cls = zoo_cli.resolve_format(src, args[1])
    init = zoo_cli._init_args(args[3::2])
    assert_same_zoo(cls(src, **init), tmp_path / "out")
    assert read_zoo_info(tmp_path / "out").provenance["source_arguments"] == init
    if cls.detect.__func__ is not ZooDataModule.detect.__func__:  # opted in to detection: found automatically
        assert zoo_cli.resolve_format(src)[0] == name


# --- build and the entry point ------------------------------------------------------------------------------
def test_build_is_forwarded_to_the_builders(monkeypatch, capsys) -> None:
    from nfn_lab.cli import build

    received = []
    monkeypatch.setattr(build, "main", lambda argv: received.append(argv) or 0)
    status, _, _ = run(capsys, "build", "cnn_zoo", "out", "--seed", "3")
    assert status == 0 and received == [["cnn_zoo", "out", "--seed", "3"]]


def test_entry_point_commands(capsys) -> None:
    assert cli.main(["--help"]) == 0 and "zoo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", "no_such_config.yaml"])  # LightningCLI's own error
    assert exit_info.value.code == 2 and "no_such_config.yaml" in capsys.readouterr().err
    assert cli.main(["train"]) == 2 and "unknown command 'train'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["zoo"])  # argparse: a subcommand is required
    assert exit_info.value.code == 2


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nfn_lab", "zoo", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "{info,convert,build}" in done.stdout


def test_build_help_is_forwarded(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["zoo", "build", "--help"])
    assert exit_info.value.code == 0 and "{cnn,inr}" in capsys.readouterr().out
