"""Evaluation (paper Sec. 4.2): confusion matrix, mIoU, evaluating a network, paper tables."""
from .confusion import ConfusionMatrix, intersection_over_union

__all__ = ["ConfusionMatrix", "intersection_over_union"]
