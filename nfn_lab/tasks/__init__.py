"""LightningModules, one per weight-space problem, over one shared BaseTask."""

from nfn_lab.tasks.base import BackboneFactory, BaseTask
from nfn_lab.tasks.classification import ClassifyINRTask
from nfn_lab.tasks.editing import EditINRTask
from nfn_lab.tasks.generalization import PredictGeneralizationTask

__all__ = ["BackboneFactory", "BaseTask", "ClassifyINRTask", "EditINRTask", "PredictGeneralizationTask"]
