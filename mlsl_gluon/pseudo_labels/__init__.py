"""Pseudo-labels: SI/SISC inference (Sec. 3.2), class-balanced selection with the spatial prior,
Eq. 4 source statistics, pseudo weak labels (Sec. 3.3.1), the HDF5 probability cache and the
per-round pass that ties them together."""
from .cache import CacheEntry, CacheError, ProbabilityCache, encode_top_classes
from .grid import dequantise_probability, quantise_probability
from .inference import (
    accumulate_patches,
    normalise_by_count,
    patch_seed,
    predict_batch,
    sample_patch_corners,
    single_inference,
    sisc_inference,
)
from .round import (
    RoundFolder,
    combine_pseudo_label_round,
    file_digest,
    round_patch_seed,
    run_pseudo_label_round,
)
from .selection import apply_spatial_prior, select_from_top_classes, select_pseudo_labels
from .source_stats import (
    SourceStatistics,
    class_mean_sizes,
    load_source_stats,
    save_source_stats,
    spatial_prior,
    spatial_prior_from_counts,
    write_source_stats,
)
from .thresholds import CodeRefinement, ThresholdAccumulator, ThresholdRefinement, class_balanced_thresholds
from .weak_labels import (
    RELEASED_CLASS_PRIOR_19,
    pseudo_weak_labels,
    released_class_prior,
    released_per_crop_weak_labels,
)

__all__ = [
    "CacheEntry", "CacheError", "ProbabilityCache", "encode_top_classes", "dequantise_probability",
    "quantise_probability", "accumulate_patches", "normalise_by_count", "patch_seed",
    "predict_batch", "sample_patch_corners", "single_inference", "sisc_inference",
    "RoundFolder", "combine_pseudo_label_round", "file_digest", "round_patch_seed",
    "run_pseudo_label_round", "CodeRefinement", "ThresholdAccumulator", "ThresholdRefinement",
    "apply_spatial_prior", "class_balanced_thresholds", "select_from_top_classes",
    "select_pseudo_labels", "SourceStatistics", "class_mean_sizes", "load_source_stats",
    "save_source_stats", "write_source_stats", "spatial_prior", "spatial_prior_from_counts",
    "RELEASED_CLASS_PRIOR_19",
    "pseudo_weak_labels", "released_class_prior", "released_per_crop_weak_labels",
]
