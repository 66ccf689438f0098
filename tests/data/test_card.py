"""zoo.json (ZooInfo, read_zoo_info) and the README.md dataset card of a zoo."""

import json

import datasets
import pytest
import yaml

from datamodules.arrow_zoo import to_parquet
from nfn_lab.data.card import ZooInfo, dataset_card, read_zoo_info, stamp_provenance
from nfn_lab.weightspace import NetworkSpec
from tests.data.arrow_zoo.generate import METADATA, TARGETS, GeneratedArrowZoo, generate


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> GeneratedArrowZoo:
    return generate(tmp_path_factory.mktemp("arrow") / "zoo")


def test_zoo_json_describes_the_zoo(zoo) -> None:
    info = read_zoo_info(zoo.root)
    assert info.network_spec == zoo.network_spec
    assert info.target_names == TARGETS and info.metadata_columns == METADATA
    assert info.splits == {"train": 12, "val": 4, "test": 6}
    provenance = info.provenance
    assert provenance["builder"] == "tests.data.arrow_zoo.generate" and provenance["seed"] == 0
    assert {"created", "command", "library_versions"} <= set(provenance)
    assert provenance["library_versions"]["datasets"] == datasets.__version__


def test_dataset_card_front_matter_and_text(zoo, tmp_path) -> None:
    card = (zoo.root / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert "model-zoo" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    assert "configs" not in meta  # the Arrow layout has no Parquet data files to list
    assert "`w2`, `b2`" in body and "`test_loss`" in body and "`network_id`" in body
    out = to_parquet(zoo.root, tmp_path / "hub")
    meta = yaml.safe_load((out / "README.md").read_text().split("---\n", 2)[1])
    files = {c["split"]: c["path"] for c in meta["configs"][0]["data_files"]}
    assert files == {s: f"data/{s}-*.parquet" for s in ("train", "val", "test")}


def test_zoo_info_round_trips_through_its_dict() -> None:
    info = ZooInfo(NetworkSpec.from_shapes([(4, 3), (2, 4)]), ("y",), ("step",), {"train": 3}, {"seed": 1})
    assert ZooInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    with pytest.raises(ValueError, match=r"zoo.json: missing field 'target_names'"):
        ZooInfo.from_dict({k: v for k, v in info.to_dict().items() if k != "target_names"})
    with pytest.raises(ValueError, match="not an nfn-lab zoo description"):
        ZooInfo.from_dict({**info.to_dict(), "format": "other"})
    with pytest.raises(ValueError, match=r"unknown splits \['dev'\]"):
        ZooInfo(info.network_spec, ("y",), splits={"dev": 1})


def test_stamp_provenance_adds_when_and_how(tmp_path) -> None:
    stamped = stamp_provenance({"source_path": tmp_path, "command": "by hand"})
    assert stamped["source_path"] == str(tmp_path) and stamped["command"] == "by hand"  # plain JSON, kept
    assert stamped["library_versions"]["datasets"] == datasets.__version__ and stamped["created"].endswith("+00:00")
    assert stamp_provenance(None)["command"]  # the process's command line


def test_card_of_the_parquet_layout_lists_its_files() -> None:
    info = ZooInfo(NetworkSpec.from_shapes([(4, 3), (2, 4)]), ("y",), splits={"train": 3, "test": 2})
    front = yaml.safe_load(dataset_card(info, "parquet").split("---\n", 2)[1])
    assert front["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"},
    ]


def test_read_zoo_info_explains_what_is_missing(zoo, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no zoo at .*no such folder"):
        read_zoo_info(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no zoo.json in"):
        read_zoo_info(tmp_path / "empty")
    (tmp_path / "empty" / "zoo.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_zoo_info(tmp_path / "empty")
    newer = {**read_zoo_info(zoo.root).to_dict(), "format_version": 99}
    (tmp_path / "empty" / "zoo.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        read_zoo_info(tmp_path / "empty")
