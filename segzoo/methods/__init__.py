"""One LightningModule per method; each is registered in ``segzoo.registry.METHODS``."""

from segzoo.methods.kanezaki import KanezakiSegmentation
from segzoo.methods.r2o import R2O
from segzoo.methods.scops import SCOPS
from segzoo.methods.supervised import SupervisedSegmentation
from segzoo.registry import METHODS

METHODS.register("supervised")(SupervisedSegmentation)

__all__ = ["KanezakiSegmentation", "R2O", "SCOPS", "SupervisedSegmentation"]
