"""The allowed range of every numeric configuration field, checked when a value is applied.

A value outside its range is an error naming where it came from (the YAML file or the ``--set``)
before anything runs: a negative learning rate would train to NaN, a portion of 1.5 would fail
only after the whole pseudo-label inference pass, ``epochs_per_round: -1`` would finish a run
without training.
"""
import math

# "section.key" -> (low, high, low_open, high_open, what the field is): None = unbounded.
# Lists apply the range to every element.
_FRACTION = (0.0, 1.0, True, False, "a fraction")
_POSITIVE = (0.0, None, True, False, "a positive number")
_NON_NEGATIVE = (0.0, None, False, False, "a number >= 0")
_COUNT = (1, None, False, False, "a count >= 1")
_EVERY = (0, None, False, False, "an interval >= 0 (0 = never)")
_MOMENTUM = (0.0, 1.0, False, True, "a momentum in [0, 1)")
_PIXELS = (8, None, False, False, "a size in pixels >= 8")

RANGES = {
    "experiment.seed": (0, None, False, False, "a seed >= 0"),
    "data.gta5_frame_size": _PIXELS,
    "data.crop_size": _PIXELS,
    "data.scale_range": _POSITIVE,
    "data.hard_classes_released": (0, 255, False, False, "a Cityscapes label id 0..255"),
    "data.hard_class_prob": (0.0, 1.0, False, False, "a probability in [0, 1]"),
    "data.hard_class_share": (0.0, 1.0, False, False, "a fraction in [0, 1]"),
    "data.hard_class_number": _COUNT,
    "model.width": _POSITIVE,
    "pseudo_label.K": _COUNT,
    "pseudo_label.patch_size": _PIXELS,
    "pseudo_label.longer_side": _PIXELS,
    "pseudo_label.portion_start": _FRACTION,
    "pseudo_label.portion_step": (0.0, 1.0, False, False, "a fraction in [0, 1]"),
    "pseudo_label.portion_max": _FRACTION,
    "pseudo_label.eta": _NON_NEGATIVE,
    "pseudo_label.batch_size": _COUNT,
    "train.lr": _POSITIVE,
    "train.momentum": _MOMENTUM,
    "train.wd": _NON_NEGATIVE,
    "train.batch_size": _COUNT,
    "train.lambda_cls": _NON_NEGATIVE,
    "train.cls_loss_scale_released": _NON_NEGATIVE,
    "train.log_every": _EVERY,
    "train.checkpoint_every": _EVERY,
    "train.loader_workers": (0, None, False, False, "a number of processes >= 0"),
    "rounds.num_rounds": _COUNT,
    "rounds.epochs_per_round": _COUNT,
    "rounds.source_portion_start": _FRACTION,
    "rounds.source_portion_step": (0.0, 1.0, False, False, "a fraction in [0, 1]"),
    "rounds.source_portion_max": _FRACTION,
    "source_only.lr": _POSITIVE,
    "source_only.epochs": _COUNT,
    "source_only.batch_size": _COUNT,
    "source_only.momentum": _MOMENTUM,
    "source_only.wd": _NON_NEGATIVE,
    "eval.scales": _POSITIVE,
}

# (smaller, larger): the first must not exceed the second.
ORDERED = [("pseudo_label.portion_start", "pseudo_label.portion_max"),
           ("rounds.source_portion_start", "rounds.source_portion_max")]


def _interval(low, high, low_open, high_open):
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def range_error(name, value):
    """Why ``value`` is not allowed for field ``name`` (``'section.key'``), or None if it is."""
    if name not in RANGES or value is None:
        return None
    low, high, low_open, high_open, what = RANGES[name]
    values = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not values:
        return "must not be empty"
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            return f"must be {what} {_interval(low, high, low_open, high_open)}, got {item}"
        below = low is not None and (item <= low if low_open else item < low)
        above = high is not None and (item >= high if high_open else item > high)
        if below or above:
            shown = value if len(values) == 1 and not isinstance(value, list) else f"{item} in {value}"
            return f"must be {what} {_interval(low, high, low_open, high_open)}, got {shown}"
    return None


def order_errors(values):
    """Messages for every ``ORDERED`` pair out of order; ``values`` maps 'section.key' -> value."""
    return [f"{small} ({values[small]}) must not exceed {large} ({values[large]})"
            for small, large in ORDERED if values[small] > values[large]]
