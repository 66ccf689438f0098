"""One DataModule per public model-zoo format, built only on nfn_lab's public API.

Import each format from its own module, e.g.
``from datamodules.small_cnn_zoo import SmallCNNZooDataModule``; this package imports
nothing itself, so naming one zoo never loads the others.
"""
