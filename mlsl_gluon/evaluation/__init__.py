"""Evaluation (paper Sec. 4.2): confusion matrix, mIoU, evaluating a network, paper tables."""
from .confusion import ConfusionMatrix, intersection_over_union
from .evaluate import evaluate, multi_scale_probabilities, predict_labels
from .label_files import save_label_id_png, train_id_to_label_id_lut
from .report import evaluation_summary, format_per_class, load_matrix, read_evaluation, write_evaluation
from .tables import (
    METHODS,
    format_markdown,
    format_table,
    load_paper_tables,
    our_scores,
    table_rows,
    write_table,
)

__all__ = [
    "METHODS",
    "ConfusionMatrix",
    "evaluate",
    "evaluation_summary",
    "format_markdown",
    "format_per_class",
    "format_table",
    "intersection_over_union",
    "load_matrix",
    "load_paper_tables",
    "multi_scale_probabilities",
    "our_scores",
    "predict_labels",
    "read_evaluation",
    "save_label_id_png",
    "table_rows",
    "train_id_to_label_id_lut",
    "write_evaluation",
    "write_table",
]
