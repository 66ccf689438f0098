"""The two implementations under comparison, behind one interface.

Both libraries export the same layer names with the same constructor signatures, so a
network is built once (see :mod:`benchmarks._networks`) from either library's namespace.
The reference ``nfn`` is never a dependency of nfn-lab: ``setup_reference.sh`` installs it
into ``benchmarks/.reference``, and :func:`reference` imports it from there.
:func:`revision` puts nfn-lab as committed at another git revision in the reference's place,
to time a change against the code before it in one process.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from torch import Tensor

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(__file__).resolve().parent / ".reference"
REFERENCE_VERSION = "0.1.2"

# Every layer a benchmark case may use; both libraries provide all of them.
LAYER_NAMES = (
    "NPLinear",
    "HNPLinear",
    "NPAttention",
    "NPPool",
    "HNPPool",
    "TupleOp",
    "LearnedScale",
    "ChannelDropout",
    "GaussianFourierFeatureTransform",
    "IOSinusoidalEncoding",
)


@dataclass(frozen=True)
class Library:
    """One implementation: its layers and its own feature and spec types.

    Attributes:
        name: ``"ref"`` or ``"ours"``.
        version: the installed version (or git commit), for the report.
        layers: a namespace with every name in :data:`LAYER_NAMES`.
        features_cls: the library's ``WeightSpaceFeatures`` class.
        spec_from_features: the library's ``network_spec_from_wsfeat``.
        label: what the report calls it, e.g. ``"nfn 0.1.2"``.
    """

    name: str
    version: str
    layers: SimpleNamespace
    features_cls: type
    spec_from_features: Callable[[Any], Any]
    label: str = "nfn-lab"

    def features(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Any:
        """Wraps shared tensors ``weights[i]: (B, C, n_out, n_in, *filter)``, ``biases[i]: (B, C, n_out)``."""
        return self.features_cls(list(weights), list(biases))


def _namespace(*modules: Any) -> SimpleNamespace:
    """Collects :data:`LAYER_NAMES` from ``modules`` (the first that has a name wins)."""
    found = {}
    for name in LAYER_NAMES:
        owner = next((m for m in modules if hasattr(m, name)), None)
        if owner is None:
            raise ImportError(f"{name} is in none of {[m.__name__ for m in modules]}.")
        found[name] = getattr(owner, name)
    return SimpleNamespace(**found)


def _nfn_lab(package: str, name: str, version: str, label: str) -> Library:
    """nfn-lab's layers from the importable package ``package`` (``nfn_lab`` or a renamed copy)."""
    layers = importlib.import_module(f"{package}.layers")
    attention = importlib.import_module(f"{package}.layers.attention")
    weightspace = importlib.import_module(f"{package}.weightspace")
    return Library(
        name,
        version,
        _namespace(layers, attention),
        weightspace.WeightSpaceFeatures,
        weightspace.network_spec_from_wsfeat,
        label,
    )


def ours() -> Library:
    """nfn-lab, imported from the repository checkout."""
    try:
        version = importlib.metadata.version("nfn-lab")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not pip-installed
        version = "checkout"
    return _nfn_lab("nfn_lab", "ours", version, "nfn-lab")


def revision(rev: str, repo: Path = REPO_ROOT) -> Library:
    """nfn-lab as committed at git revision ``rev``, as the ``"ref"`` side.

    ``git archive`` exports that revision's ``nfn_lab`` package into a temporary folder
    (removed at exit), renamed to ``nfn_lab_<commit>`` in every import, so that both versions
    live in one process and are timed side by side like the reference.

    Raises:
        ValueError: if git cannot resolve ``rev`` or the revision has no ``nfn_lab`` package.
    """
    git = ["git", "-C", str(repo)]
    try:
        commit = (
            subprocess.run([*git, "rev-parse", "--short", f"{rev}^{{commit}}"], capture_output=True, check=True)
            .stdout.decode()
            .strip()
        )
        archive = subprocess.run([*git, "archive", commit, "nfn_lab"], capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as err:
        raise _unexported(rev, repo, err.stderr.decode(errors="replace").strip()) from err
    except OSError as err:  # no git
        raise _unexported(rev, repo, str(err)) from err
    package = f"nfn_lab_{commit}"
    root = Path(tempfile.mkdtemp(prefix="nfn_lab_revision_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    (root / "nfn_lab").rename(root / package)
    for path in (root / package).rglob("*.py"):
        path.write_text(re.sub(r"\bnfn_lab\b", package, path.read_text()))
    sys.path.insert(0, str(root))
    return _nfn_lab(package, "ref", commit, f"nfn-lab at {commit}")


def _unexported(rev: str, repo: Path, detail: str) -> ValueError:
    return ValueError(
        f"cannot export nfn_lab at git revision {rev!r} from {repo}: {detail}; "
        "pass a commit, branch or tag of this repository (e.g. HEAD~1)."
    )


def reference(directory: Path = REFERENCE_DIR) -> Library:
    """The reference ``nfn`` package, imported from ``directory`` (never from site-packages).

    Raises:
        FileNotFoundError: if ``directory`` has no ``nfn`` package (run ``setup_reference.sh``).
        ImportError: if the ``nfn`` found is not the one in ``directory`` or not version 0.1.2.
    """
    directory = Path(directory).resolve()
    if not (directory / "nfn" / "__init__.py").is_file():
        raise FileNotFoundError(
            f"the reference nfn=={REFERENCE_VERSION} is not installed in {directory}; run "
            "`bash benchmarks/setup_reference.sh` (or pass --ours-only to time nfn-lab alone)."
        )
    sys.path.append(str(directory))  # last, so its top-level `tests` package shadows nothing
    nfn = importlib.import_module("nfn")
    if directory not in Path(nfn.__file__).resolve().parents:
        raise ImportError(
            f"`import nfn` found {nfn.__file__}, not the copy in {directory}; "
            "uninstall the other nfn or run the benchmark in a fresh process."
        )
    version = importlib.metadata.distribution("nfn").version
    if version != REFERENCE_VERSION:
        raise ImportError(
            f"{directory} holds nfn {version}, the benchmark compares against {REFERENCE_VERSION}; "
            "rerun `bash benchmarks/setup_reference.sh`."
        )
    layers = importlib.import_module("nfn.layers")
    common = importlib.import_module("nfn.common")
    spec_from_features = common.network_spec_from_wsfeat
    return Library("ref", version, _namespace(layers), common.WeightSpaceFeatures, spec_from_features, f"nfn {version}")


def sides(ours_only: bool = False, reference_dir: Path = REFERENCE_DIR, against: str | None = None) -> list[Library]:
    """The libraries a benchmark times, ``"ref"`` first: the reference (from ``reference_dir``), or
    nfn-lab at git revision ``against``, or nothing if ``ours_only``; then nfn-lab (``"ours"``)."""
    if against:
        return [revision(against), ours()]
    return [ours()] if ours_only else [reference(reference_dir), ours()]
