"""Every experiment YAML under ``experiments/`` runs: one batch of ``nfn-lab fit`` on generated data.

A run config is a YAML file with top-level ``model`` and ``data`` keys; the other YAML files
are the components that run configs name by path (``backbones/``, ``zoos/``) and the trainer
presets (``experiments/trainer/``). Each run config is resolved by the CLI itself, pointed at
a small zoo generated in the format of its data class (:data:`FAKE_ZOOS`: the generators in
``tests/data/<zoo>/generate.py``, and the real builders for the offline digits zoos), and
fit for one batch with the ``cpu`` and ``debug`` presets, in process.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfn_lab.cli.train import run

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PRESETS = sorted((EXPERIMENTS / "trainer").glob("*.yaml"))
SMOKE_PRESETS = [EXPERIMENTS / "trainer" / "cpu.yaml", EXPERIMENTS / "trainer" / "debug.yaml"]
SMOKE_DATA = {"batch_size": 2, "eval_batch_size": 2, "num_workers": 0}  # every zoo, whatever the config says


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _is_run_config(path: Path) -> bool:
    top = _load(path)
    return isinstance(top, dict) and {"model", "data"} <= top.keys()


ALL_YAML = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if "sweeps" not in p.parts)  # sweeps: tests/cli/test_sweep.py
RUN_CONFIGS = [p for p in ALL_YAML if _is_run_config(p)]
# Backbones that take 10-40 s for one batch on 2 CPU cores (512-channel NF-layers, the NFT, the
# NP editor): configs naming one run with -m slow. The default run still fits at least one
# config per task and zoo format (test_default_run_covers_every_task_and_zoo_format).
SLOW_BACKBONES = {
    EXPERIMENTS / "classify_inr" / "backbones" / name
    for name in ("hnp.yaml", "hnp_mnist.yaml", "np.yaml", "np_mnist.yaml", "nft.yaml")
} | {EXPERIMENTS / "edit_inr" / "backbones" / "np.yaml"}


def _name(path: Path) -> str:
    return str(path.relative_to(EXPERIMENTS))


def _references(config: Path) -> set[Path]:
    """The component files a run config names (any string value ending in ``.yaml``), resolved."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
        elif isinstance(node, str) and node.endswith(".yaml"):
            yield node

    return {(config.parent / ref).resolve() for ref in walk(_load(config))}


def _is_slow(config: Path) -> bool:
    return bool(_references(config) & SLOW_BACKBONES)


def _by_speed(configs: list[Path]) -> list:
    return [pytest.param(c, id=_name(c), marks=[pytest.mark.slow] if _is_slow(c) else []) for c in configs]


@functools.cache
def resolve(config: Path, *args: str) -> dict[str, Any]:
    """The config as the CLI resolves it (``fit --print_config``): components inlined, defaults filled."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(config), *args, "--print_config"])
    assert exit_info.value.code in (0, None), f"{_name(config)} does not parse: exit {exit_info.value.code}"
    return yaml.safe_load(out.getvalue())


@pytest.fixture(autouse=True)
def _cli_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when given args while sys.argv holds pytest's own."""
    monkeypatch.setattr(sys, "argv", ["nfn-lab"])


# --- generated zoos, one per format (and variant) per session ---------------------------------------


class FakeZoos:
    """Writes each generated zoo once per session and points a config's data arguments at it."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.roots: dict[str, Path] = {}

    def get(self, key: str, write: Callable[[Path], Any]) -> Path:
        """The zoo ``key``, written by ``write(root)`` the first time it is asked for."""
        if key not in self.roots:
            root = self.tmp_path_factory.mktemp(key) / "zoo"
            write(root)
            self.roots[key] = root
        return self.roots[key]

    def overrides(self, data: dict[str, Any]) -> dict[str, Any]:
        """``--data.init_args`` values that point the resolved ``data`` config at a generated zoo."""
        class_path = data["class_path"]
        if class_path not in FAKE_ZOOS:
            raise KeyError(
                f"no generated zoo for {class_path}; add a writer for its format to FAKE_ZOOS in {Path(__file__).name}."
            )
        return {**FAKE_ZOOS[class_path](self, data["init_args"]), **SMOKE_DATA}


def _small_cnn_zoo(zoos: FakeZoos, init_args: dict[str, Any]) -> dict[str, Any]:
    from tests.data.small_cnn_zoo.generate import generate

    root = zoos.get("small_cnn_zoo", lambda r: generate(r, num_networks=24))
    return {"root": str(root), "index_csv": str(root / "split_indices.csv")}


NFN_SIREN_IMAGES, NFN_SIREN_COPIES = 12, 2


def _nfn_siren(zoos: FakeZoos, init_args: dict[str, Any]) -> dict[str, Any]:
    """RGB SIRENs for a CIFAR-10 zoo (named by its folder), grey ones otherwise; 8/2/2 images."""
    from tests.data.nfn_siren.generate import generate

    channels = 3 if "cifar" in Path(init_args["root"]).name else 1
    root = zoos.get(
        f"nfn_siren_{channels}ch",
        lambda r: generate(r, num_images=NFN_SIREN_IMAGES, aug_copies=NFN_SIREN_COPIES, channels=channels, steps=2),
    )
    copies = init_args["aug_copies"]
    copies = "null" if copies is None else min(copies, NFN_SIREN_COPIES)
    return {"root": str(root), "split_points": "[8, 10]", "aug_copies": copies}


def _digits_cnn_zoo(root: Path) -> None:
    from nfn_lab.builders.cnn_zoo import CNNZooConfig, build_cnn_zoo

    build_cnn_zoo(root, CNNZooConfig(num_networks=20, steps=(0,), chunk_size=20), progress=False)


def _digits_inr_zoo(root: Path) -> None:
    from nfn_lab.builders.inr_zoo import ImageSet, INRZooConfig, build_inr_zoo, load_images

    digits = load_images("digits")
    images = ImageSet(digits.images[:20], digits.labels[:20], digits.source, digits.class_names)
    build_inr_zoo(root, INRZooConfig(steps=2), images=images, progress=False)


# Arrow zoos by the folder name their builder writes to (nfn-lab zoo build cnn|inr).
DIGITS_BUILDERS = {"digits_cnn_zoo": _digits_cnn_zoo, "digits_inr_zoo": _digits_inr_zoo}


def _arrow_zoo(zoos: FakeZoos, init_args: dict[str, Any]) -> dict[str, Any]:
    name = Path(init_args["root"]).name
    if name not in DIGITS_BUILDERS:
        raise KeyError(f"no generated Arrow zoo for a root named {name!r}; known: {sorted(DIGITS_BUILDERS)}.")
    return {"root": str(zoos.get(name, DIGITS_BUILDERS[name]))}


FAKE_ZOOS: dict[str, Callable[[FakeZoos, dict[str, Any]], dict[str, Any]]] = {
    "datamodules.small_cnn_zoo.SmallCNNZooDataModule": _small_cnn_zoo,
    "datamodules.nfn_siren.NFNSirenDataModule": _nfn_siren,
    "datamodules.arrow_zoo.ArrowZooDataModule": _arrow_zoo,
}


@pytest.fixture(scope="session")
def fake_zoos(tmp_path_factory: pytest.TempPathFactory) -> FakeZoos:
    return FakeZoos(tmp_path_factory)


# --- tests ----------------------------------------------------------------------------------------------


def test_discovery_finds_every_task() -> None:
    tasks = {resolve(p)["model"]["class_path"].rsplit(".", 1)[1] for p in RUN_CONFIGS}
    assert tasks == {"PredictGeneralizationTask", "ClassifyINRTask", "EditINRTask"}


def test_every_component_is_used() -> None:
    """Every component (a YAML file with a top-level class_path) is named by a run config, and exists."""
    used = set().union(*(_references(p) for p in RUN_CONFIGS))
    missing = sorted(str(p) for p in used if not p.is_file())
    assert not missing, f"run configs name files that do not exist: {missing}"
    components = {p for p in ALL_YAML if "class_path" in _load(p)}
    assert components, "no components found"
    unused = sorted(_name(p) for p in components - used)
    assert not unused, f"components no run config uses: {unused}"


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=_name)
def test_config_resolves_to_a_generated_zoo_format(config: Path) -> None:
    resolved = resolve(config)
    assert resolved["data"]["class_path"] in FAKE_ZOOS, f"add a zoo writer for {resolved['data']['class_path']}"


def test_default_run_covers_every_task_and_zoo_format() -> None:
    def kind(config: Path) -> tuple[str, str]:
        resolved = resolve(config)
        return resolved["model"]["class_path"], resolved["data"]["class_path"]

    assert {kind(c) for c in RUN_CONFIGS if not _is_slow(c)} == {kind(c) for c in RUN_CONFIGS}


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=_name)
def test_run_name_is_the_config_path(config: Path) -> None:
    assert _load(config).get("run_name") == _name(config).removesuffix(".yaml")


@pytest.mark.parametrize("preset", PRESETS, ids=_name)
def test_trainer_preset_sets_only_its_keys(preset: Path) -> None:
    expected = _load(preset)
    assert expected, f"{_name(preset)} is empty"
    before = resolve(RUN_CONFIGS[0])["trainer"]
    after = resolve(RUN_CONFIGS[0], "--trainer", str(preset))["trainer"]
    assert {key: after[key] for key in expected} == expected
    unchanged = before.keys() - expected.keys()
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}


@pytest.mark.parametrize("config", _by_speed(RUN_CONFIGS))
def test_fast_dev_run(config: Path, fake_zoos: FakeZoos, tmp_path: Path) -> None:
    data = fake_zoos.overrides(resolve(config)["data"])
    args = ["fit", "--config", str(config), "--wandb", "disabled", "--trainer.default_root_dir", str(tmp_path)]
    for preset in SMOKE_PRESETS:
        args += ["--trainer", str(preset)]
    for key, value in data.items():
        args += [f"--data.init_args.{key}", str(value)]
    cli = run(args)
    assert cli.trainer.global_step == 1
    metric = cli.trainer.callback_metrics.get(cli.model.monitor)  # what the best checkpoint is chosen by
    assert metric is not None and math.isfinite(float(metric)), f"{cli.model.monitor}: {cli.trainer.callback_metrics}"
