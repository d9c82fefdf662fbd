"""The demo run: the whole method on the generated street-scene shift, on CPU, in minutes.

Steps, every one the package's real code path: generate the data in the GTA5 / Cityscapes
formats, train the source model (the ``source-only`` method from a seeded random trunk, since no
ImageNet weights can be downloaded), then adapt it with CBST (SI pseudo-labels), SISC and
SISC+PWL through the same round loop as a real run, evaluate each on the target val split, and
write the comparison table, ``results.json`` and pictures.

The network, frames, K, rounds and epochs are reduced to fit the CPU budget (``DemoSettings``);
each reduction keeps the paper's proportions where one exists (SISC patches of half the frame
height, as 512 of 1024; source subset comparable in size to the target set, as CBST's 750 GTA5
frames beside 505 Cityscapes ones). The settings were fixed on a development seed (100), never
on the validation labels of the seeds the README reports.
"""
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mxnet as mx

from ..config import load_config
from ..data.classes import CITYSCAPES_19_NAMES
from ..evaluation.report import read_evaluation
from ..model import MLSLNet, init_params
from ..model.weights import ademxapp_param_map
from ..training.experiment import run_experiment
from .pictures import write_pictures
from .synthetic import generate_demo_data
from .table import format_demo_table

logger = logging.getLogger(__name__)

# (method as the training code names it, key in results.json), in the paper's row order.
METHODS = (("source-only", "source_only"), ("cbst", "cbst"), ("sisc", "sisc"), ("sisc-pwl", "sisc_pwl"))


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run; every other number is the paper's default."""

    size: tuple = (128, 256)  # (H, W) of every generated frame
    n_source: int = 150  # labeled source frames (GTA5 format)
    n_target_train: int = 60  # unlabeled target frames adapted on
    n_target_val: int = 30  # labeled target frames scored on (never read by the adaptation)
    width: float = 0.0625  # ResNet-38 channel multiplier (1.0 = the paper's network)
    crop_size: int = 128  # training crop side (paper 504 on 1024x2048 frames)
    source_epochs: int = 40  # source-only training epochs (from a random trunk)
    source_lr: float = 0.02  # source-only SGD learning rate, fixed
    source_batch_size: int = 8  # source-only images per step
    num_rounds: int = 3  # self-training rounds (paper 6)
    epochs_per_round: int = 2  # epochs of step 2 per round (paper 2)
    lr: float = 0.002  # round-0 learning rate, / sqrt(2) per round (paper 1e-4 for a converged net)
    batch_size: int = 4  # images per step in the rounds, the same for every method
    K: int = 10  # SISC patches per image (paper 50)
    patch_size: int = 64  # SISC patch side: half the frame height, as 512 of 1024
    portion_start: float = 0.2  # target portion p of round 0
    portion_step: float = 0.1  # growth per round: the paper's range in half the rounds
    source_portion: float = 0.4  # share of the source set mixed into every round

    def overrides(self, method, seed):
        """Config overrides (nested dict) of one method's run."""
        return {
            "experiment": {"name": f"demo-{method}", "seed": seed},
            "data": {"gta5_frame_size": None, "crop_size": self.crop_size},
            # A trunk trained from scratch needs batch statistics while it learns; the rounds
            # then keep them frozen as every released script does.
            "model": {"width": self.width, "freeze_bn": method != "source-only"},
            "source_only": {"lr": self.source_lr, "epochs": self.source_epochs,
                            "batch_size": self.source_batch_size},
            "pseudo_label": {"K": self.K, "patch_size": self.patch_size, "longer_side": max(self.size),
                             "portion_start": self.portion_start, "portion_step": self.portion_step},
            "train": {"lr": self.lr, "batch_size": self.batch_size, "log_every": 0, "checkpoint_every": 0},
            "rounds": {"num_rounds": self.num_rounds, "epochs_per_round": self.epochs_per_round,
                       "source_portion_start": self.source_portion, "source_portion_step": 0.0,
                       "source_portion_max": self.source_portion},
        }


FULL = DemoSettings()
# A smoke run of the whole pipeline in about a minute; its numbers mean nothing.
TINY = DemoSettings(size=(64, 128), n_source=6, n_target_train=4, n_target_val=3, width=0.03125, crop_size=64,
                    source_epochs=1, source_batch_size=4, num_rounds=2, epochs_per_round=1, batch_size=4, K=3,
                    patch_size=32, source_portion=0.5)
PRESETS = {"full": FULL, "tiny": TINY}


def demo_config(settings, method, seed):
    """The resolved Config of one method's demo run, checked as strictly as any run's.

    Parameters
    ----------
    settings : DemoSettings
    method : str
        ``'source-only'``, ``'cbst'``, ``'sisc'`` or ``'sisc-pwl'``.
    seed : int

    Returns
    -------
    Config
        The paper's defaults for (gta5, method) with ``settings.overrides`` applied.
    """
    flat = [f"{section}.{key}={json.dumps(value)}"
            for section, values in settings.overrides(method, seed).items() for key, value in values.items()]
    return load_config(overrides=flat, source="gta5", method=method)


def write_random_trunk(path, width, seed):
    """Write a seeded random-init ResNet-38 trunk in the ademxapp file format.

    It stands in for the ImageNet weights a real run starts its source training from (none can
    be downloaded); the training code reads it as it would read those.

    Parameters
    ----------
    path : str or Path
    width : float
        Channel multiplier of the trunk.
    seed : int

    Returns
    -------
    str or Path
        ``path``.
    """
    net = MLSLNet(19, width=width, with_classifier=False)
    mx.random.seed(seed)
    init_params(net, ctx=mx.cpu())
    arrays = {key: param.data() for key, param in ademxapp_param_map(net.trunk).items()}
    mx.nd.save(str(path), arrays)
    return path


def _check_out(out, seed, settings):
    """Refuse to mix two demos in one folder: a re-run with the same seed resumes."""
    record = {"seed": seed, "settings": asdict(settings)}
    marker = out / "demo.json"
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous != json.loads(json.dumps(record)):
            raise ValueError(f"{out} holds a demo with seed {previous.get('seed')} and other settings; "
                             f"choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record, indent=1))


def run_demo(out, *, seed=0, settings=FULL, ctx=None, progress=True):
    """Run the demo into ``out`` and return the results written to ``out/results.json``.

    Parameters
    ----------
    out : str or Path
        Demo folder: ``data/``, one run folder per method, ``results.json``, ``table.txt``,
        ``pictures/``. A re-run with the same seed and settings resumes (finished runs are kept).
    seed : int
        Seeds the data and every run.
    settings : DemoSettings
        ``FULL`` (default) or ``TINY`` (a smoke run).
    ctx : list of mx.Context, optional
        Default CPU.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``{'source_only', 'cbst', 'sisc', 'sisc_pwl'}``: target val mIoU in percent; ``per_round``:
        per method, the mIoU after each round; ``per_class``; ``seed``, ``settings``, ``elapsed_s``.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_out(out, seed, settings)
    ctx = ctx or [mx.cpu()]
    data_root = out / "data"
    generate_demo_data(data_root, seed=seed, n_source=settings.n_source,
                       n_target_train=settings.n_target_train, n_target_val=settings.n_target_val,
                       size=settings.size)
    init = write_random_trunk(out / "random_trunk.params", settings.width, seed)
    summaries, timings = {}, {}
    for method, key in METHODS:
        step_started = time.perf_counter()
        weights = init if method == "source-only" else out / "source_only" / "final.params"
        logger.info("demo: %s", method)
        config = demo_config(settings, method, seed)
        summaries[key] = run_experiment(config, data_root, weights, out / key, ctx, resume=True,
                                        progress=progress)
        timings[key] = round(time.perf_counter() - step_started, 1)

    results = {key: 100.0 * summaries[key]["miou"] for _, key in METHODS}
    rounds = range(settings.num_rounds)
    results["per_round"] = {key: [100.0 * summaries[key]["round_miou"][str(r)] for r in rounds]
                            for _, key in METHODS[1:]}
    results["per_class"] = {key: [None if v is None else 100.0 * v for v in read_evaluation(out / key)["iou"]]
                            for _, key in METHODS}
    results.update(units="percent mIoU on the target val split", class_names=list(CITYSCAPES_19_NAMES),
                   seed=seed, settings=asdict(settings), step_seconds=timings)
    table = format_demo_table(results)
    (out / "table.txt").write_text(table)
    results["pictures"] = {k: str(p) for k, p in write_pictures(out, results, settings, seed, ctx).items()}
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    logger.info("demo finished in %.0f s", results["elapsed_s"])
    return results, table
