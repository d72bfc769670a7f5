"""The segmentation suite: SegNet with paired down/up pooling (``suite``), its training task
(``task``) and the up-pooling reconstruction measurement (``reconstruction``)."""
from .suite import SUITE

__all__ = ["SUITE"]
