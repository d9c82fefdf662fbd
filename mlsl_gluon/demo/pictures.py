"""The demo's pictures: a grid of target frames with labels and predictions, and mIoU per round."""
import logging
import re
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image

from ..data import Cityscapes
from ..data.classes import CITYSCAPES_PALETTE, LABEL_ID_TO_TRAIN_ID
from ..evaluation import predict_labels
from ..training.network import build_network
from .synthetic import make_frame

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


def _frame_index(name):
    match = re.search(r"_(\d{6})$", name)
    if match is None:
        raise ValueError(f"target name {name!r} does not end in a 6-digit frame number")
    return int(match.group(1))


def prediction_grid(out, config_of, seed, size, ctx, rows=3):
    """Grid image: per target-train frame, the columns of ``COLUMNS``.

    The ground truth shown is regenerated from the seed for this picture only: the adaptation
    never read it (no target-train label file exists on disk).

    Parameters
    ----------
    out : Path
        Demo folder (holds ``data/``, ``source_only/``, ``sisc/``, ``sisc_pwl/``).
    config_of : callable
        ``config_of(method) -> Config`` of the demo run of that method.
    seed : int
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
        label_ids = make_frame(seed, "target_train", _frame_index(name), "target", size)[1]
        pseudo = np.array(Image.open(pseudo_dir / f"{name}.png"))
        preds = {key: predict_labels(net, [image], ctx[:1])[0] for key, net in nets.items()}
        cells = [image, colorize(LABEL_ID_TO_TRAIN_ID[label_ids]), colorize(preds["source_only"]),
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


def write_pictures(out, results, settings, seed, ctx):
    """Write ``pictures/grid.png`` and ``pictures/miou_per_round.png``; return their paths."""
    from .run import demo_config  # late: run imports this module

    pictures = Path(out) / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    grid = prediction_grid(Path(out), lambda method: demo_config(settings, method, seed), seed, settings.size,
                           ctx)
    grid_path = pictures / "grid.png"
    Image.fromarray(grid).save(grid_path)
    plot_path = plot_rounds(results, pictures / "miou_per_round.png")
    logger.info("pictures: %s, %s", grid_path, plot_path)
    return {"grid": grid_path, "miou_per_round": plot_path}
