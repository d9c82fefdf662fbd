"""The demo's tables: per-class IoU and mIoU of each method on the target val split (Table-1 style),
then the mechanisms per round (pseudo-label precision / coverage, the PWL branch).

The package's paper-table printer (``mlsl_gluon.evaluation.tables``) sets results beside the
published Cityscapes numbers; on generated data that comparison means nothing, so the demo
prints its own rows, with the gain over source-only instead of the difference to the paper.
"""
import math

LABELS = {"source_only": "Source only", "cbst": "CBST (SI)", "sisc": "SISC", "sisc_pwl": "SISC+PWL"}
PSEUDO_LABELS = {"cbst": "CBST (SI)", "si_same_network": "SI, SISC's networks", "sisc": "SISC",
                 "sisc_pwl": "SISC+PWL"}
BRANCH_ROWS = (("weak_label_accuracy", "PWL accuracy vs true presence (%)", 100.0),
               ("branch_accuracy", "branch accuracy, sigmoid > 0.5 (%)", 100.0),
               ("classification_loss", "cls loss, training (ln 2 = 0.693)", 1.0),
               ("target_classification_loss", "cls loss, target vs PWL", 1.0))
SHORT = {"road": "Road", "sidewalk": "Sidew.", "building": "Build.", "wall": "Wall", "fence": "Fence",
         "pole": "Pole", "traffic light": "T.Light", "traffic sign": "T.Sign", "vegetation": "Veg.",
         "terrain": "Terr.", "sky": "Sky", "person": "Person", "rider": "Rider", "car": "Car",
         "truck": "Truck", "bus": "Bus", "train": "Train", "motorcycle": "M.cycle", "bicycle": "Bicycle"}


def _cell(value):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _percent(share):
    return "-" if share is None else f"{100 * share:.1f}"


def format_demo_table(results):
    """Plain-text table of a demo's results.

    Parameters
    ----------
    results : dict
        ``per_class`` ({method key: per-class IoU in percent, None = class absent}),
        ``class_names``, and the mIoU of each method key (see :func:`mlsl_gluon.demo.run.run_demo`).

    Returns
    -------
    str
        One row per method; columns: the classes some method scored, mIoU, gain over source only.
        With ``pseudo_label_precision`` in ``results``, the mechanism tables follow
        (:func:`format_mechanisms`).
    """
    methods = [m for m in LABELS if m in results]
    names = results["class_names"]
    shown = [i for i in range(len(names)) if any(results["per_class"][m][i] is not None for m in methods)]
    headers = [SHORT.get(names[i], names[i]) for i in shown] + ["mIoU", "gain"]
    widths = [max(len(h), 5) for h in headers]
    label_w = max(len(LABELS[m]) for m in methods) + 2
    lines = [f"Demo: generated street scenes, synthetic source -> 'real' target "
             f"(seed {results.get('seed')}), target val IoU (%)",
             f"{'Method':<{label_w}}" + " ".join(f"{h:>{w}}" for h, w in zip(headers, widths))]
    lines.append("-" * len(lines[-1]))
    for m in methods:
        cells = [_cell(results["per_class"][m][i]) for i in shown]
        gain = results[m] - results["source_only"] if "source_only" in results else None
        cells += [_cell(results[m]), "" if m == "source_only" or gain is None else f"{gain:+.1f}"]
        lines.append(f"{LABELS[m]:<{label_w}}" + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    text = "\n".join(lines) + "\n"
    if "pseudo_label_precision" in results:
        text += "\n" + format_mechanisms(results)
    return text


def format_mechanisms(results):
    """Plain-text tables of the mechanism measurements, one column per round.

    Parameters
    ----------
    results : dict
        ``pseudo_label_precision`` and ``pseudo_label_coverage`` ({run: [share per round]}) and
        the branch rows of ``BRANCH_ROWS`` ({'sisc_pwl': [per round]}), as written by
        :func:`mlsl_gluon.demo.mechanisms.measure_mechanisms`.

    Returns
    -------
    str
    """
    precision, coverage = results["pseudo_label_precision"], results["pseudo_label_coverage"]
    rounds = len(next(iter(precision.values())))
    label_w = max(len(v) for v in list(PSEUDO_LABELS.values()) + [r[1] for r in BRANCH_ROWS]) + 2
    header = f"{'round':<{label_w}}" + "".join(f"{r:>12}" for r in range(rounds))
    lines = ["Pseudo-labels on the target train split, per round: precision / coverage (%)", header,
             "-" * len(header)]
    for key, label in PSEUDO_LABELS.items():
        if key in precision:
            cells = [f"{_percent(p)}/{_percent(c)}" for p, c in zip(precision[key], coverage[key])]
            lines.append(f"{label:<{label_w}}" + "".join(f"{c:>12}" for c in cells))
    if "weak_label_accuracy" in results:
        lines += ["", "Classification branch (SISC+PWL) on the target train split, per round", header,
                  "-" * len(header)]
        for key, label, scale in BRANCH_ROWS:
            values = results[key]["sisc_pwl"]
            cells = [f"{scale * v:.1f}" if scale != 1.0 else f"{v:.3f}" for v in values]
            lines.append(f"{label:<{label_w}}" + "".join(f"{c:>12}" for c in cells))
        if "presence_majority_accuracy" in results:
            lines.append(f"(a constant answer per class, its majority over the images, scores "
                         f"{100 * results['presence_majority_accuracy']:.1f} %)")
    return "\n".join(lines) + "\n"
