"""What a zoo says about itself: ``zoo.json`` (:class:`ZooInfo`) and the ``README.md`` dataset card.

Every zoo in nfn-lab's format has both (see docs/formats.md); ``zoo.json`` is written last
and marks the zoo complete (:mod:`nfn_lab.data.staging`)::

    {
      "format": "nfn-lab-zoo",
      "format_version": 1,
      "network_spec": {"weight_shapes": [[16, 1, 3, 3], ...], "bias_shapes": [[16], ...]},
      "target_names": ["test_accuracy"],
      "metadata_columns": ["network_id", "step"],
      "splits": {"train": 800, "val": 200, "test": 1000},
      "provenance": {"source_format": ..., "source_path": ...}   (converted zoos)
                 or {"builder": ..., "seed": ...}                (built zoos)
                    plus "command", "created" (UTC, ISO 8601) and "library_versions"
    }

A Hub zoo's ``zoo.json`` is fetched with ``huggingface_hub.hf_hub_download``. The card's YAML
front matter carries the Hub's metadata (and, for the Parquet layout, each split's files).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
import yaml

from nfn_lab.data.arrow_container import SPLITS, bias_column, locate_zoo, weight_column
from nfn_lab.data.staging import INFO_FILE
from nfn_lab.weightspace import NetworkSpec

__all__ = [
    "CARD_FILE",
    "FORMAT_VERSION",
    "ZooInfo",
    "dataset_card",
    "read_zoo_info",
    "stamp_provenance",
    "write_description",
]

FORMAT_NAME = "nfn-lab-zoo"
FORMAT_VERSION = 1
CARD_FILE = "README.md"


@dataclass
class ZooInfo:
    """The contents of ``zoo.json``.

    Args:
        network_spec: every network's spec, all sizes set.
        target_names: the target columns (float32, or int64 for class labels).
        metadata_columns: the per-network metadata columns.
        splits: rows per split, e.g. ``{"train": 800, "val": 200}``.
        provenance: where the zoo came from (see the module docstring).
        format_version: the version of this format the zoo was written in.
    """

    network_spec: NetworkSpec
    target_names: tuple[str, ...]
    metadata_columns: tuple[str, ...] = ()
    splits: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.target_names = tuple(self.target_names)
        self.metadata_columns = tuple(self.metadata_columns)
        try:
            self.network_spec.get_num_params()
        except ValueError:
            raise ValueError(
                f"a zoo's network_spec must give every size, got {self.network_spec}; build it with "
                "NetworkSpec.from_shapes(...) or network_spec_from_wsfeat(..., set_all_dims=True)."
            ) from None
        names = [*self.array_columns, *self.target_names, *self.metadata_columns]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise ValueError(
                f"column names {clashes} are used twice; w<i>/b<i> name the arrays, so give targets and "
                "metadata other, distinct names."
            )
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; a zoo has splits among {SPLITS}.")

    @property
    def array_columns(self) -> list[str]:
        """``["w0", "b0", "w1", "b1", ...]``."""
        return [c for i in range(len(self.network_spec)) for c in (weight_column(i), bias_column(i))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "network_spec": self.network_spec.to_dict(),
            "target_names": list(self.target_names),
            "metadata_columns": list(self.metadata_columns),
            "splits": dict(self.splits),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = INFO_FILE) -> ZooInfo:
        """Inverse of :meth:`to_dict`; ``where`` (the file) prefixes error messages."""
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"{where}: not an nfn-lab zoo description (its 'format' is not {FORMAT_NAME!r}).")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{where}: format_version {version!r} is not supported by this nfn-lab (it reads up to "
                f"{FORMAT_VERSION}); upgrade nfn-lab."
            )
        try:
            return cls(
                network_spec=NetworkSpec.from_dict(data["network_spec"]),
                target_names=data["target_names"],
                metadata_columns=data.get("metadata_columns", ()),
                splits=dict(data.get("splits", {})),
                provenance=dict(data.get("provenance", {})),
                format_version=version,
            )
        except KeyError as err:
            raise ValueError(f"{where}: missing field {err}.") from None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def read_zoo_info(path_or_hub_id: str | os.PathLike) -> ZooInfo:
    """Reads ``zoo.json`` of a local zoo folder or a Hub dataset (no weights are read).

    Raises:
        FileNotFoundError: if there is no zoo (or no ``zoo.json``) there.
        ValueError: if ``zoo.json`` is malformed or from a newer format version.
    """
    root, hub_id = locate_zoo(path_or_hub_id)
    if root is not None:
        path = root / INFO_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no {INFO_FILE} in {root}: not an nfn-lab zoo (write one with datamodules.arrow_zoo.ZooWriter or "
                "`nfn-lab zoo convert`)."
            )
    else:
        from huggingface_hub import hf_hub_download

        assert hub_id is not None  # locate_zoo gives a folder or a Hub id
        try:
            path = Path(hf_hub_download(hub_id, INFO_FILE, repo_type="dataset"))
        except Exception as err:  # offline, missing repo or file: all mean "no zoo here"
            raise FileNotFoundError(
                f"{hub_id!r} is neither a local folder nor a reachable Hugging Face Hub dataset with a "
                f"{INFO_FILE} ({type(err).__name__}: {err})."
            ) from err
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    return ZooInfo.from_dict(data, where=str(path))


def _library_versions() -> dict[str, str]:
    import nfn_lab

    return {
        "nfn_lab": nfn_lab.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "datasets": datasets.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
    }


def stamp_provenance(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """``provenance`` as plain JSON values, with ``command`` (if absent), ``created`` and ``library_versions`` added."""
    stamped = dict(provenance or {})
    stamped.setdefault("command", shlex.join(sys.argv))
    stamped["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    stamped["library_versions"] = _library_versions()
    return json.loads(json.dumps(stamped, default=str))  # plain JSON values (paths -> strings)


def write_description(folder: Path, info: ZooInfo, layout: str) -> None:
    """Writes the card and then ``zoo.json`` (last: it marks the zoo complete) into ``folder``."""
    (folder / CARD_FILE).write_text(dataset_card(info, layout))
    (folder / INFO_FILE).write_text(json.dumps(info.to_dict(), indent=2) + "\n")


def _size_category(rows: int) -> str:
    bounds = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M")]
    return next((label for bound, label in bounds if rows < bound), "n>10M")


def dataset_card(info: ZooInfo, layout: str) -> str:
    """The ``README.md`` of a zoo: YAML front matter (Hub metadata) and a description.

    Args:
        info: the zoo's description.
        layout: ``"arrow"`` or ``"parquet"`` (the latter lists each split's files for the Hub).
    """
    front: dict[str, Any] = {
        "pretty_name": f"nfn-lab model zoo ({len(info.network_spec)}-layer networks)",
        "tags": ["weight-space-learning", "model-zoo", "nfn-lab"],
        "size_categories": [_size_category(sum(info.splits.values()))],
    }
    if layout == "parquet":
        front["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in info.splits],
            }
        ]
    spec = info.network_spec
    rows = [
        f"| `{weight_column(i)}`, `{bias_column(i)}` | {i} | {tuple(w.shape)} | {tuple(b.shape)} |"
        for i, (w, b) in enumerate(zip(spec.weight_spec, spec.bias_spec))
    ]
    splits = ", ".join(f"{s}: {n:,}" for s, n in info.splits.items())
    provenance = yaml.safe_dump(info.provenance, sort_keys=False).rstrip()
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {front['pretty_name']}",
        "",
        f"A model zoo in nfn-lab's format (version {info.format_version}): one row per network checkpoint, "
        f"{spec.get_num_params():,} parameters each. Splits: {splits}.",
        "",
        "## Columns",
        "",
        "Weights and biases in PyTorch layout `(n_out, n_in, *filter)` / `(n_out,)`, flattened row-major into "
        "fixed-length float32 lists:",
        "",
        "| columns | layer | weight shape | bias shape |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Targets: {', '.join(f'`{t}`' for t in info.target_names) or 'none'}.",
        f"Metadata: {', '.join(f'`{m}`' for m in info.metadata_columns) or 'none'}.",
        "",
        "## Loading",
        "",
        "```python",
        "from datamodules.arrow_zoo import ArrowZooDataModule",
        'dm = ArrowZooDataModule("<this folder or owner/name>", batch_size=32)',
        "```",
        "",
        "## Provenance",
        "",
        "```yaml",
        provenance,
        "```",
        "",
    ]
    return "\n".join(lines)
