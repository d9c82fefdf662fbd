"""The demo's sizes (``DemoSettings``) and the run configuration of each method built from them.

The network, frames, K, rounds and epochs are reduced to fit the CPU budget; each reduction keeps
the paper's proportions where one exists. ``docs/DEMO.md`` gives the reason for every value and
the development seeds they were chosen on (never the seeds the README reports).
"""
import json
from dataclasses import dataclass

from ..config import load_config

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
    K: int = 50  # SISC patches per image: coverage K * 64^2 / (128 * 256) = 6.25, the paper's
    patch_size: int = 64  # SISC patch side: half the frame height, as 512 of 1024
    patch_batch: int = 50  # SISC patches per network call (speed only; the labels do not change)
    portion_start: float = 0.15  # target portion p of round 0 (paper 0.15)
    portion_step: float = 0.05  # growth per round (paper 0.05)
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
            "pseudo_label": {"K": self.K, "patch_size": self.patch_size, "batch_size": self.patch_batch,
                             "longer_side": max(self.size), "portion_start": self.portion_start,
                             "portion_step": self.portion_step},
            "train": {"lr": self.lr, "batch_size": self.batch_size, "log_every": 0, "checkpoint_every": 0},
            "rounds": {"num_rounds": self.num_rounds, "epochs_per_round": self.epochs_per_round,
                       "source_portion_start": self.source_portion, "source_portion_step": 0.0,
                       "source_portion_max": self.source_portion},
        }


FULL = DemoSettings()
# A smoke run of the whole pipeline in about a minute; its numbers mean nothing.
TINY = DemoSettings(size=(64, 128), n_source=6, n_target_train=4, n_target_val=3, width=0.03125, crop_size=64,
                    source_epochs=1, source_batch_size=4, num_rounds=2, epochs_per_round=1, batch_size=4, K=3,
                    patch_size=32, patch_batch=6, source_portion=0.5)
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
