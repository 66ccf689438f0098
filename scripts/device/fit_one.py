"""Runs one ``nfn-lab fit`` in this process and writes what it measured to a JSON file.

Usage (from the repository root)::

    python scripts/device/fit_one.py RESULT.json -- fit --config experiments/digits/classify_np.yaml ...

Everything after ``--`` is passed to :func:`nfn_lab.cli.train.run` unchanged (the same
arguments as ``nfn-lab``). The JSON holds the test metrics of the best validation
checkpoint (what ``--test_after_fit`` computes), the steps and epochs actually trained,
the best validation score, the wall time and the run folder. A failed run still writes
the JSON, with ``"status": "failed"`` and the exception, and exits non-zero.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars -> Python floats (NaN/inf as strings, which JSON cannot hold)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main(argv: list[str]) -> int:
    """Parses ``RESULT.json -- ARGS...``, runs the fit and writes the result file."""
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        raise SystemExit("usage: fit_one.py RESULT.json -- fit --config ... (see the docstring)")
    result_path, args = Path(argv[0]), argv[2:]
    torch_threads = int(os.environ.get("NFN_TORCH_THREADS", "1"))
    record: dict[str, Any] = {"args": args, "torch_threads": torch_threads, "status": "failed"}
    start = time.time()
    code = 1
    try:
        import torch

        torch.set_num_threads(torch_threads)
        from nfn_lab.cli.train import run

        cli = run(args)
        trainer = cli.trainer
        callback = trainer.checkpoint_callback
        record.update(
            status="ok",
            global_step=int(trainer.global_step),
            epochs_started=int(trainer.current_epoch),
            stopped_early=bool(
                (trainer.max_steps not in (None, -1) and trainer.global_step < trainer.max_steps)
                or (
                    trainer.max_steps in (None, -1)
                    and trainer.max_epochs not in (None, -1)
                    and trainer.current_epoch < trainer.max_epochs
                )
            ),
            max_steps=trainer.max_steps,
            max_epochs=trainer.max_epochs,
            monitor=getattr(callback, "monitor", None),
            best_val=_plain(getattr(callback, "best_model_score", None)),
            best_ckpt=getattr(callback, "best_model_path", None),
            log_dir=trainer.log_dir,
            device=str(cli.model.device),
            test=[{k: _plain(v) for k, v in d.items()} for d in getattr(cli, "test_results", None) or []],
            wandb_imported="wandb" in sys.modules,
        )
        code = 0
    except BaseException as err:
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()[-4000:]
        code = err.code if isinstance(err, SystemExit) and isinstance(err.code, int) and err.code else 1
    record["wall_s"] = round(time.time() - start, 1)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
