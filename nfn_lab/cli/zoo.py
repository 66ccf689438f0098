"""``nfn-lab zoo``: inspect model zoos and convert them to nfn-lab's Arrow format.

Subcommands::

    nfn-lab zoo info PATH [--format NAME] [--json]
    nfn-lab zoo convert SRC DST [--format NAME] [--arg KEY=VALUE ...] [--parquet] [--overwrite]
    nfn-lab zoo build BUILDER ...      (nfn_lab.cli.build)

Formats are those of the registry :mod:`nfn_lab.data.formats`: the built-in ones
(``arrow_zoo``, ``small_cnn_zoo``, ``nfn_siren``, ``dwsnets_inr``), those other packages
declare as entry points (group ``nfn_lab.zoo_formats``) and those registered with
``register_format``. ``--format`` takes a registered name or a class path
``package.module.Class``. Automatic detection asks each format's ``detect(root)``;
``info`` prints its ``describe(root)``. Importing lightning and the formats happens only
when a subcommand needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nfn_lab.data.zoo import ZooDataModule

__all__ = ["build_parser", "convert", "disk_size", "main", "resolve_format"]


class ZooCLIError(Exception):
    """A user error: printed as ``nfn-lab zoo: error: ...`` with exit status 1."""


# --- formats --------------------------------------------------------------------------------------------
def _report_broken(name: str, err: Exception) -> None:
    print(f"nfn-lab zoo: warning: skipping format {name!r} ({type(err).__name__}: {err})", file=sys.stderr)


def resolve_format(root: Path, name: str = "auto") -> tuple[str, type[ZooDataModule]]:
    """The format of ``root``: ``name`` if given (a format name or class path), else the one that detects it."""
    from nfn_lab.data import formats

    if name != "auto":
        try:
            return name, formats.format_class(name)
        except KeyError:
            known = ", ".join(formats.format_names())
            raise ZooCLIError(
                f"unknown format {name!r}; known formats: {known} (or a class path package.module.Class)."
            ) from None
        except ImportError as err:
            raise ZooCLIError(str(err)) from None
    found = formats.zoo_formats(on_error=_report_broken)
    known = ", ".join(found) or "none found"
    matches = [n for n, cls in found.items() if cls.detect(root)]
    if not matches:
        raise ZooCLIError(
            f"{root} is not a zoo in any known format ({known}); pass --format if its files are named unusually."
        )
    if len(matches) > 1:
        raise ZooCLIError(f"{root} looks like several formats ({', '.join(matches)}); choose one with --format.")
    return matches[0], found[matches[0]]


def _existing(path: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise ZooCLIError(f"{root}: no such file or folder.")
    return root


# --- info ---------------------------------------------------------------------------------------------
def disk_size(root: Path) -> int:
    """Bytes of all files under ``root`` (symbolic links not followed)."""
    if root.is_file():
        return root.stat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(root) for f in files)


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    raise AssertionError  # unreachable


def _plain(value: Any) -> Any:
    """JSON-able form of a describe() value (network specs become their dict)."""
    from nfn_lab.weightspace import NetworkSpec

    if isinstance(value, NetworkSpec):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _info(args: argparse.Namespace) -> int:
    root = _existing(args.path)
    name, cls = resolve_format(root, args.format)
    described = {"format_name": name, **cls.describe(root), "size_on_disk": disk_size(root)}
    if args.json:
        print(json.dumps(_plain(described), indent=2))
        return 0
    print(f"{root}")
    for key, value in described.items():
        if key == "size_on_disk":
            value = _human(value)
        elif isinstance(value, dict):
            value = json.dumps(_plain(value)) if key != "provenance" else "\n" + _indented(value)
        print(f"  {key}: {value}")
    return 0


def _indented(mapping: dict, depth: int = 2) -> str:
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            lines.append(f"{'  ' * depth}{key}:\n{_indented(value, depth + 1)}")
        else:
            lines.append(f"{'  ' * depth}{key}: {value}")
    return "\n".join(lines)


# --- convert ------------------------------------------------------------------------------------------
def _init_args(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ZooCLIError(
                f"--arg takes KEY=VALUE (a constructor argument of the format's DataModule), got {pair!r}."
            )
        parsed[key] = yaml.safe_load(value)
    return parsed


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    format_name: str = "auto",
    init_args: dict[str, Any] | None = None,
    parquet: bool = False,
    overwrite: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> Path:
    """Writes the zoo at ``src`` (any format) to ``dst`` in nfn-lab's Arrow format (or Parquet layout).

    Every split the format's DataModule has is read through its datasets without
    transforms. Metadata columns are kept if the dataset has ``metadata_columns`` and
    ``read_metadata(indices)`` (as Arrow zoos do); a ``source_index`` column records each
    network's index in its source split.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from datamodules.arrow_zoo import ZooWriter
    from nfn_lab.data.staging import check_destination
    from nfn_lab.weightspace import collate

    root = _existing(os.fspath(src))
    name, cls = resolve_format(root, format_name)
    check_destination(dst, overwrite)  # fail before reading anything
    datamodule = cls(root, **(init_args or {}))
    writer: ZooWriter | None = None
    try:
        for split in datamodule.splits:
            dataset = datamodule.make_dataset(split, None)
            read_metadata = getattr(dataset, "read_metadata", None)
            metadata_columns = tuple(getattr(dataset, "metadata_columns", ())) if read_metadata else ()
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)  # in order: source_index
            done = 0
            with tqdm(total=len(dataset), desc=f"{split}", unit="net", disable=not progress) as bar:
                for feats, targets in loader:
                    if writer is None:
                        provenance = {
                            "source_format": name,
                            "source_class": f"{cls.__module__}.{cls.__qualname__}",
                            "source_path": str(root.resolve()),
                            "source_arguments": init_args or {},
                        }
                        ours = () if "source_index" in metadata_columns else ("source_index",)  # keep the first
                        writer = ZooWriter(
                            dst,
                            datamodule.network_spec,
                            list(targets),
                            provenance,
                            metadata_columns=(*ours, *metadata_columns),
                            overwrite=overwrite,
                            write_parquet=parquet,
                        )
                    indices = list(range(done, done + feats.batch_size))
                    metadata = {"source_index": indices} if "source_index" not in metadata_columns else {}
                    if metadata_columns and read_metadata is not None:
                        metadata.update(read_metadata(indices))
                    writer.add(split, feats, targets, metadata)
                    done += feats.batch_size
                    bar.update(feats.batch_size)
        if writer is None:
            raise ZooCLIError(f"{root} has no networks in any split; nothing to convert.")
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _convert(args: argparse.Namespace) -> int:
    out = convert(
        args.src,
        args.dst,
        args.format,
        _init_args(args.arg),
        parquet=args.parquet,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(f"wrote {out}")
    return 0


# --- build ---------------------------------------------------------------------------------------------
def _build(args: argparse.Namespace) -> int:
    """Forwards ``nfn-lab zoo build ...`` to :func:`nfn_lab.cli.build.main`."""
    from nfn_lab.cli import build

    return build.main(list(args.rest))


# --- entry point --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nfn-lab zoo", description="Inspect and convert model zoos.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,convert,build}")

    info = commands.add_parser("info", help="describe a zoo: format, networks, spec, targets, size, provenance")
    info.add_argument("path", help="the zoo's folder")
    info.add_argument("--format", default="auto", help="format name or class path (default: detect)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    conv = commands.add_parser("convert", help="convert a zoo to nfn-lab's Arrow format")
    conv.add_argument("src", help="the source zoo's folder")
    conv.add_argument("dst", help="the new zoo's folder")
    conv.add_argument("--format", default="auto", help="source format name or class path (default: detect)")
    conv.add_argument(
        "--arg", action="append", default=[], metavar="KEY=VALUE", help="source DataModule argument (YAML value)"
    )
    conv.add_argument("--parquet", action="store_true", help="write the Parquet (Hugging Face Hub) layout")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing zoo at DST once done")
    conv.add_argument("--batch-size", type=int, default=256, help="networks read per batch")
    conv.add_argument("--quiet", action="store_true", help="no progress bar")
    conv.set_defaults(func=_convert)

    build = commands.add_parser("build", help="build a zoo offline (see nfn_lab.builders)", add_help=False)
    build.add_argument("rest", nargs=argparse.REMAINDER)
    build.set_defaults(func=_build)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``nfn-lab zoo`` with ``argv`` (default: ``sys.argv[2:]``); returns the exit status."""
    argv = list(sys.argv[2:] if argv is None else argv)
    # `build` is forwarded whole: argparse's REMAINDER drops a leading option such as --help.
    forward = argv[:1] == ["build"]
    args = argparse.Namespace(func=_build, rest=argv[1:]) if forward else build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ZooCLIError, FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as err:
        print(f"nfn-lab zoo: error: {err}", file=sys.stderr)
        return 1
