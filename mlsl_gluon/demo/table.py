"""The demo's Table-1-style comparison: per-class IoU and mIoU of each method on the target val split.

The package's paper-table printer (``mlsl_gluon.evaluation.tables``) sets results beside the
published Cityscapes numbers; on generated data that comparison means nothing, so the demo
prints its own rows, with the gain over source-only instead of the difference to the paper.
"""
import math

LABELS = {"source_only": "Source only", "cbst": "CBST (SI)", "sisc": "SISC", "sisc_pwl": "SISC+PWL"}
SHORT = {"road": "Road", "sidewalk": "Sidew.", "building": "Build.", "wall": "Wall", "fence": "Fence",
         "pole": "Pole", "traffic light": "T.Light", "traffic sign": "T.Sign", "vegetation": "Veg.",
         "terrain": "Terr.", "sky": "Sky", "person": "Person", "rider": "Rider", "car": "Car",
         "truck": "Truck", "bus": "Bus", "train": "Train", "motorcycle": "M.cycle", "bicycle": "Bicycle"}


def _cell(value):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


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
    return "\n".join(lines) + "\n"
