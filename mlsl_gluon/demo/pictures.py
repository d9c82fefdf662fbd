"""The demo's pictures: target frames with labels and predictions, mIoU per round, the mechanisms."""
import logging
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image

from ..data import Cityscapes
from ..data.classes import CITYSCAPES_PALETTE
from ..evaluation import predict_labels
from ..training.network import build_network
from .presets import demo_config
from .synthetic import read_target_truth

matplotlib.use("Agg")  # files only: the demo runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

logger = logging.getLogger(__name__)

COLUMNS = ("target image", "ground truth", "source only", "SISC+PWL", "SISC pseudo-labels")
UNLABELED_RGB = (255, 255, 255)  # pseudo-labels: pixels left without a label
VOID_RGB = (0, 0, 0)  # ground truth: void (the ego car's bonnet)


def colorize(train_ids, ignore_rgb=VOID_RGB):
    """uint8 (H, W) train ids -> (H, W, 3) RGB in the Cityscapes palette; 255 -> ``ignore_rgb``."""
    train_ids = np.asarray(train_ids)
    out = np.empty(train_ids.shape + (3,), np.uint8)
    out[:] = ignore_rgb
    known = train_ids < len(CITYSCAPES_PALETTE)
    out[known] = CITYSCAPES_PALETTE[train_ids[known]]
    return out


def _header(text, width, height=14):
    bar = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (3, height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def prediction_grid(out, config_of, size, ctx, rows=3):
    """Grid image: per target-train frame, the columns of ``COLUMNS``.

    The ground truth shown comes from ``out/truth``, outside the data root the adaptation read.

    Parameters
    ----------
    out : Path
        Demo folder (holds ``data/``, ``source_only/``, ``sisc/``, ``sisc_pwl/``).
    config_of : callable
        ``config_of(method) -> Config`` of the demo run of that method.
    size : tuple
        (H, W) of the frames.
    ctx : list of mx.Context
    rows : int
        Frames shown.

    Returns
    -------
    numpy.ndarray
        uint8 RGB grid.
    """
    target = Cityscapes(out / "data" / "Cityscapes", "train", with_labels=False)
    nets = {key: build_network(config_of(method), ctx, out / key / "final.params")[0]
            for method, key in (("source-only", "source_only"), ("sisc-pwl", "sisc_pwl"))}
    sisc = config_of("sisc")
    pseudo_dir = out / "sisc" / f"round_{sisc.rounds.num_rounds - 1:02d}" / "pseudo" / "labels"
    lines = []
    for i in range(min(rows, len(target))):
        image, _, name = target[i]
        truth = read_target_truth(out / "truth", name)
        pseudo = np.array(Image.open(pseudo_dir / f"{name}.png"))
        preds = {key: predict_labels(net, [image], ctx[:1])[0] for key, net in nets.items()}
        cells = [image, colorize(truth), colorize(preds["source_only"]),
                 colorize(preds["sisc_pwl"]), colorize(pseudo, UNLABELED_RGB)]
        padded = [np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells]
        lines.append(np.concatenate(padded, 1))
    cell_w = size[1] + 4
    header = np.concatenate([_header(title, cell_w) for title in COLUMNS], 1)
    grid = np.concatenate([header] + lines, 0)
    return cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)


def plot_rounds(results, path):
    """Target mIoU after each round per method, the source model at round 0, as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    start = results["source_only"]
    methods = (("cbst", "CBST (SI)", "s-"), ("sisc", "SISC", "o-"), ("sisc_pwl", "SISC+PWL", "^-"))
    for key, label, style in methods:
        values = [start] + list(results["per_round"][key])
        ax.plot(range(len(values)), values, style, label=label)
    ax.axhline(start, color="grey", linestyle="--", label="source only")
    ax.set_xlabel("round (0 = source model)")
    ax.set_ylabel("target val mIoU (%)")
    ax.set_title(f"Demo, seed {results['seed']}: target mIoU per self-training round")
    ax.set_xticks(range(len(values)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


RUN_STYLES = (("cbst", "CBST (SI)", "s-"), ("si_same_network", "SI, SISC's networks", "x:"),
              ("sisc", "SISC", "o-"), ("sisc_pwl", "SISC+PWL", "^-"))


def plot_mechanisms(results, path):
    """Two panels as a PNG: pseudo-label precision vs coverage per round (SI against SISC), and
    the PWL branch per round (weak-label accuracy, branch accuracy, classification loss)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for key, label, style in RUN_STYLES:
        if key not in results["pseudo_label_precision"]:
            continue
        x = results["pseudo_label_coverage"][key]
        y = results["pseudo_label_precision"][key]
        left.plot(x, y, style, label=label)
        for r, (xr, yr) in enumerate(zip(x, y)):
            left.annotate(str(r), (xr, yr), textcoords="offset points", xytext=(4, -10), fontsize=7)
    left.set_xlabel("coverage (share of target-train pixels selected)")
    left.set_ylabel("precision (share of selected pixels right)")
    left.set_title("pseudo-labels per round (numbers = round)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    rounds = range(len(results["weak_label_accuracy"]["sisc_pwl"]))
    right.plot(rounds, results["weak_label_accuracy"]["sisc_pwl"], "o-", label="PWL vs true presence")
    right.plot(rounds, results["branch_accuracy"]["sisc_pwl"], "^-", label="branch (sigmoid > 0.5) vs truth")
    if "presence_majority_accuracy" in results:
        right.axhline(results["presence_majority_accuracy"], color="tab:orange", linestyle=":",
                      label="constant answer per class")
    right.set_ylabel("accuracy over (image, class) pairs")
    right.set_xlabel("round")
    right.set_xticks(list(rounds))
    right.grid(alpha=0.3)
    loss_axis = right.twinx()
    loss_axis.plot(rounds, results["classification_loss"]["sisc_pwl"], "k--", label="cls loss (training)")
    loss_axis.axhline(np.log(2), color="grey", linestyle=":", label="ln 2")
    loss_axis.set_ylabel("classification loss (Eq. 5)")
    handles = right.get_legend_handles_labels()[0] + loss_axis.get_legend_handles_labels()[0]
    right.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
    right.set_title("classification branch on the target (SISC+PWL)")
    fig.suptitle(f"Demo, seed {results['seed']}: the mechanisms where they act")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_pictures(out, results, settings, seed, ctx):
    """Write ``pictures/{grid,miou_per_round,mechanisms}.png``; return their paths."""
    pictures = Path(out) / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    grid = prediction_grid(Path(out), lambda method: demo_config(settings, method, seed), settings.size, ctx)
    grid_path = pictures / "grid.png"
    Image.fromarray(grid).save(grid_path)
    plot_path = plot_rounds(results, pictures / "miou_per_round.png")
    mechanisms_path = plot_mechanisms(results, pictures / "mechanisms.png")
    logger.info("pictures: %s, %s, %s", grid_path, plot_path, mechanisms_path)
    return {"grid": grid_path, "miou_per_round": plot_path, "mechanisms": mechanisms_path}
