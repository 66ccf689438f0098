"""``python -m nfn_lab``: the ``nfn-lab`` command (:func:`nfn_lab.cli.main`)."""

from nfn_lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
