"""``nfn-lab sweep``'s engine: hyperparameter sweeps in the W&B sweep format, run by Optuna or W&B.

- :mod:`~nfn_lab.sweeps.spec`: the sweep file, parsed and checked before any trial starts;
- :mod:`~nfn_lab.sweeps.search`: the local search as an Optuna study (samplers, pruner, storage);
- :mod:`~nfn_lab.sweeps.trial`: one trial, an ``nfn-lab fit`` subprocess streaming its metric;
- :mod:`~nfn_lab.sweeps.reporting`: the Lightning callback that streams it;
- :mod:`~nfn_lab.sweeps.online`: the W&B backend (``wandb.sweep`` and ``wandb.agent``);
- :mod:`~nfn_lab.sweeps.report`: the results table.

The command itself is :mod:`nfn_lab.cli.sweep`. This package imports nothing on import, so
that ``nfn-lab fit`` loads only :mod:`~nfn_lab.sweeps.reporting`.
"""
