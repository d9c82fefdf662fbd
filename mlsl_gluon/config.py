"""Typed run configuration: every number of a training run (SPEC 3-5; profile fields: SPEC 9).

Resolution order: dataclass defaults -> the preset of the (source, method) pair ->
an experiments/*.yaml file -> ``--set key=value`` overrides. YAML and ``--set`` are strict:
an unknown key or a value of the wrong type is an error naming the file and the key.
Options that reproduce the authors' released code instead of the paper end in ``_released``.
``experiment.profile`` (released | paper, :mod:`mlsl_gluon.profiles`) sets every field whose default
is None ("from the profile") once, at the end of :func:`load_config`.
"""
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import yaml

from .config_ranges import order_errors, range_error
from .profiles import DEFAULT_PROFILE, ProfileError, field_value, profile_value, resolve_profile

SOURCES = ("gta5", "synthia")
METHODS = ("source-only", "cbst", "cbst-pwl", "sisc", "sisc-pwl")


class ConfigError(ValueError):
    """A configuration file or override that cannot be applied."""


@dataclass
class ExperimentConfig:
    name: str = "mlsl"  # label of the run in logs and tables
    source: str = "gta5"  # source domain: gta5 (19 classes) or synthia (16 classes); target is Cityscapes
    method: str = "sisc-pwl"  # source-only | cbst (SI labels) | cbst-pwl | sisc (Sec. 3.2) | sisc-pwl
    seed: int = 0  # seeds source subsets, shuffling, augmentation, dropout and SISC patches
    profile: str = DEFAULT_PROFILE  # released (the authors' code) | paper (its text): fields left null below


@dataclass
class DataConfig:
    gta5_dir: str = "GTA5"  # folder under --data-root: images/NNNNN.png, labels/NNNNN.png
    synthia_dir: str = "SYNTHIA"  # folder under --data-root: RGB/*.png, GT/LABELS/*.png
    cityscapes_dir: str = "Cityscapes"  # folder under --data-root: leftImg8bit/, gtFine/
    gta5_frame_size: Optional[List[int]] = field(
        default_factory=lambda: [1914, 1052])  # (W, H) GTA5 frames are resized to; null = native
    source_list: Optional[str] = None  # text file of source image names to use (null = all)
    target_train_list: Optional[str] = None  # Cityscapes train list to adapt on (CBST: 505; null = 2975)
    target_val_list: Optional[str] = None  # Cityscapes val names to evaluate on (null = all 500)
    crop_size: int = 504  # square training crop: the paper's 500 rounded up to a multiple of 8
    scale_range: List[float] = field(default_factory=lambda: [0.7, 1.3])  # random rescale of the native size
    flip: bool = True  # random horizontal flip, p = 0.5
    hard_classes_released: Optional[List[int]] = None  # fixed hard-class ids (null = mined each round)
    hard_class_mining_released: Optional[bool] = None  # released: each round's rarest classes (null=profile)
    hard_class_prob: float = 0.8  # released --mine-port: share of crops centred on a hard class
    hard_class_share: float = 0.001  # released --mine-thresh: classes below this share of pixels
    hard_class_number: int = 3  # released --mine-id-number: the rarest classes


@dataclass
class ModelConfig:
    width: float = 1.0  # channel multiplier of ResNet-38 (1.0 = the paper's network; tests use less)
    freeze_bn: bool = True  # BN statistics frozen during fine-tuning (gamma/beta still train)
    cls_head: Optional[str] = None  # released (no ReLU after 3x3 conv, FC-512) | paper (null = profile)
    cls_init: Optional[str] = None  # msra | normal: init of the branch's FC-C (null = profile)


@dataclass
class PseudoLabelConfig:
    K: Optional[int] = None  # SISC patches per image: released command 25, paper 50 (null = profile)
    patch_size: int = 512  # SISC patch side h = w (Sec. 4.3: 256 or 512)
    aggregation: str = "probability"  # probability (Sec. 3.2) | vote (Sec. 4.3 "relative frequency")
    include_si_released: bool = True  # released code: add the whole-image prediction with count 1
    flip: bool = True  # average each patch / image with its horizontal flip
    longer_side: Optional[int] = 2048  # inference resizes the target so its longer side is this (null=native)
    portion_start: float = 0.15  # target portion p_0 of class-balanced selection
    portion_step: float = 0.05  # p_r = min(p_0 + r * step, max)
    portion_max: float = 0.5  # upper bound on p_r
    spatial_prior: bool = True  # CBST-SP: multiply by the source class-location frequency (GTA setting)
    eta: float = 0.05  # PWL threshold: c_pwl_i = 1 if h_t(i) > eta * m_i (Sec. 3.3.1, Table 4)
    per_crop_weak_labels_released: Optional[bool] = None  # released: weak labels per crop (null = profile)
    threshold_sampling_released: Optional[bool] = None  # released: every 4th pixel + a 0 (null = profile)
    batch_size: int = 4  # SISC patches per network call (split over the devices)
    source_stats: Optional[str] = None  # Eq. 4 sizes + spatial prior .npz (null = made in the run folder)


@dataclass
class TrainConfig:
    lr: float = 1e-4  # base learning rate of round 0; divided by sqrt(2) after each round
    momentum: float = 0.9  # SGD momentum
    wd: float = 5e-4  # weight decay (not on biases and BN beta, which also get lr x2)
    batch_size: int = 2  # images per step: 2 for SISC, 1 for SISC+PWL (Sec. 4.1.3)
    lambda_cls: Optional[float] = None  # Eq. 6 weight (Table 4): released 0.04, paper 0.025 (null = profile)
    cls_loss_scale_released: Optional[float] = None  # released code: cls loss x 0.04 instead of lambda_cls
    ohem_released: Optional[bool] = None  # OHEM cross-entropy: released SISC only (null = profile)
    # valid_pixels_per_device_batch (released) | per_image (paper Eq. 1/2); null = profile
    loss_normalization: Optional[str] = None
    log_every: int = 20  # a log line every N iterations
    checkpoint_every: int = 200  # mid-epoch checkpoint every N iterations (resume point)
    loader_workers: int = 2  # processes reading + augmenting batches (0 = none); weights do not depend on it


@dataclass
class RoundsConfig:
    num_rounds: int = 6  # self-training rounds (Sec. 4.1.3)
    epochs_per_round: int = 2  # epochs of step 2 in each round
    source_portion_start: float = 0.03  # share of the source set mixed into round 0
    source_portion_step: float = 0.0025  # growth per round; each subset extends the previous
    source_portion_max: float = 0.06  # upper bound of the source share


@dataclass
class SourceOnlyConfig:
    lr: float = 0.0016  # fixed learning rate (CBST source models)
    epochs: int = 30  # 30 for GTA5, 50 for SYNTHIA (CBST)
    batch_size: int = 16  # CBST: 16 on 4 GPUs
    momentum: float = 0.9  # SGD momentum
    wd: float = 5e-4  # weight decay


@dataclass
class EvalConfig:
    enabled: bool = True  # evaluate on Cityscapes val after every round
    flip: bool = True  # average with the horizontal flip
    scales: List[float] = field(default_factory=lambda: [1.0])  # test scales (native resolution = 1.0)


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    source_only: SourceOnlyConfig = field(default_factory=SourceOnlyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def num_classes(self):
        """19 classes for GTA5 -> Cityscapes, 16 for SYNTHIA -> Cityscapes."""
        return 19 if self.experiment.source == "gta5" else 16

    @property
    def use_pwl(self):
        """Whether the image-classification branch and Eq. 7 are trained (Sec. 3.3)."""
        return self.experiment.method.endswith("-pwl")

    @property
    def pseudo_label_method(self):
        """'si' for CBST (single inference), 'sisc' for MLSL (Sec. 3.2)."""
        return "si" if self.experiment.method.startswith("cbst") else "sisc"


def target_portion(round_idx, start=0.15, step=0.05, maximum=0.5):
    """Class-balanced selection portion p_r = min(p_0 + r * step, max) of round r."""
    return min(start + step * round_idx, maximum)


def source_portion(round_idx, start=0.03, step=0.0025, maximum=0.06):
    """Share of the source set trained on in round r: min(0.03 + 0.0025 r, 0.06)."""
    return min(start + step * round_idx, maximum)


@dataclass(frozen=True)
class PseudoLabelSettings:
    """Everything step 1 of a round needs (built by :func:`pseudo_label_settings`)."""

    method: str  # 'si' (CBST single inference) or 'sisc' (Sec. 3.2)
    K: int  # SISC patches per image
    patch_size: int  # SISC patch side h = w
    seed: int  # run seed; each round draws its own patches from it (see pseudo_labels.round)
    flip: bool  # flip-averaged predictions
    include_si: bool  # released code: the whole-image prediction joins the SISC average with count 1
    aggregation: str  # probability | vote
    batch_size: int  # SISC patches per network call
    longer_side: Optional[int]  # inference scale (None = native)
    spatial_prior: bool  # CBST-SP: multiply the source class-location frequency in
    weak_labels: bool  # write PWL vectors (Sec. 3.3.1); needs the Eq. 4 sizes
    eta: float  # PWL factor
    portion_start: float  # p_0 of class-balanced selection
    portion_step: float  # p_r = min(p_0 + r * step, max)
    portion_max: float
    released_sampling: bool = False  # released thresholds: every 4th pixel per class and image, plus a 0

    def portion(self, round_idx):
        """Target portion p_r of round r."""
        return target_portion(round_idx, self.portion_start, self.portion_step, self.portion_max)


@dataclass(frozen=True)
class LossSettings:
    """Loss of step 2 (Eq. 3, or Eq. 7 with ``use_cls``); defaults are those of the released profile."""

    use_cls: bool = False  # train the classification branch on PWL (Eq. 5)
    lambda_cls: float = profile_value(DEFAULT_PROFILE, "train.lambda_cls")  # Eq. 6 weight
    ohem: bool = False  # OHEM bootstrapped cross-entropy (released SISC)
    cls_loss_scale: Optional[float] = TrainConfig.cls_loss_scale_released  # replaces lambda_cls when set
    # segmentation loss averaging (see train_epoch)
    normalization: str = profile_value(DEFAULT_PROFILE, "train.loss_normalization")

    @property
    def cls_weight(self):
        """The factor of the classification loss actually applied."""
        return self.lambda_cls if self.cls_loss_scale is None else self.cls_loss_scale


@dataclass(frozen=True)
class TrainSettings:
    """One training stage (source-only training, or step 2 of the rounds): built by :func:`train_settings`."""

    lr: float  # learning rate (rounds: of round 0; round r uses lr / sqrt(2)^r)
    momentum: float
    wd: float
    batch_size: int  # global batch
    epochs: int  # epochs of the stage (per round for the rounds)
    seed: int  # shuffling, augmentation, dropout
    loss: LossSettings
    log_every: int  # metrics line every N iterations
    checkpoint_every: int  # mid-epoch checkpoint every N iterations
    loader_workers: int = 0  # background processes preparing the batches (results do not depend on it)


def pseudo_label_settings(config):
    """The step-1 settings of a run configuration."""
    pl = config.pseudo_label
    return PseudoLabelSettings(
        method=config.pseudo_label_method, K=field_value(config, "pseudo_label.K"), patch_size=pl.patch_size,
        seed=config.experiment.seed, flip=pl.flip, include_si=pl.include_si_released,
        aggregation=pl.aggregation, batch_size=pl.batch_size, longer_side=pl.longer_side,
        spatial_prior=pl.spatial_prior, weak_labels=config.use_pwl, eta=pl.eta,
        portion_start=pl.portion_start, portion_step=pl.portion_step, portion_max=pl.portion_max,
        released_sampling=field_value(config, "pseudo_label.threshold_sampling_released"))


def train_settings(config):
    """The training-stage settings: source-only training for that method, else step 2 of the rounds."""
    t = config.train
    lambda_cls = field_value(config, "train.lambda_cls")
    normalization = field_value(config, "train.loss_normalization")
    if config.experiment.method == "source-only":
        so = config.source_only
        # Source models are trained without the classifier and with the plain Eq. 1/2 loss.
        return TrainSettings(lr=so.lr, momentum=so.momentum, wd=so.wd, batch_size=so.batch_size,
                             epochs=so.epochs, seed=config.experiment.seed,
                             loss=LossSettings(use_cls=False, lambda_cls=lambda_cls, ohem=False,
                                               cls_loss_scale=None, normalization=normalization),
                             log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                             loader_workers=t.loader_workers)
    loss = LossSettings(use_cls=config.use_pwl, lambda_cls=lambda_cls,
                        ohem=field_value(config, "train.ohem_released"),
                        cls_loss_scale=t.cls_loss_scale_released, normalization=normalization)
    return TrainSettings(lr=t.lr, momentum=t.momentum, wd=t.wd, batch_size=t.batch_size,
                         epochs=config.rounds.epochs_per_round, seed=config.experiment.seed, loss=loss,
                         log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                         loader_workers=t.loader_workers)


def method_preset(source, method):
    """Overrides implied by the (source, method) pair, as a nested dict.

    Batch 2 without PWL and 1 with PWL (Sec. 4.1.3); the spatial prior is CBST's GTA5 setting;
    SYNTHIA source models train 50 epochs instead of 30.
    """
    if source not in SOURCES:
        raise ConfigError(f"experiment.source must be one of {SOURCES}, got {source!r}")
    if method not in METHODS:
        raise ConfigError(f"experiment.method must be one of {METHODS}, got {method!r}")
    return {
        "experiment": {"source": source, "method": method},
        "train": {"batch_size": 1 if method.endswith("-pwl") else 2},
        "pseudo_label": {"spatial_prior": source == "gta5"},
        "source_only": {"epochs": 30 if source == "gta5" else 50},
    }


def _coerce(value, annotation, where):
    """Check (and for YAML's '1e-4' strings or ints, convert) one value against a field type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where)
    if origin in (list, List):
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {annotation}")


def _apply(config, overrides, origin):
    """Apply a nested dict of overrides in place; unknown sections/keys are errors."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(overrides).__name__}")
    sections = {f.name: f for f in dataclasses.fields(config)}
    for section_name, values in overrides.items():
        if section_name not in sections:
            raise ConfigError(f"{origin}: unknown section {section_name!r}; known: {sorted(sections)}")
        section = getattr(config, section_name)
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section {section_name!r} must be a mapping, got {values!r}")
        hints = typing.get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"{origin}: unknown key {section_name}.{key}; known: {sorted(hints)}")
            value = _coerce(value, hints[key], f"{origin}: {section_name}.{key}")
            problem = range_error(f"{section_name}.{key}", value)
            if problem:
                raise ConfigError(f"{origin}: {section_name}.{key} {problem}; give a value in that range")
            setattr(section, key, value)


def parse_set(text):
    """``'train.lr=1e-4'`` -> ``{'train': {'lr': '1e-4' parsed as YAML}}``."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from None
    return {parts[0]: {parts[1]: value}}


def read_yaml(path):
    """Read an experiment file; a parse error names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return data or {}


def load_config(path=None, overrides=(), source=None, method=None, options=None):
    """Resolve a run configuration.

    Parameters
    ----------
    path : str or Path, optional
        experiments/*.yaml file; its sections override the defaults strictly.
    overrides : sequence of str
        ``section.key=value`` strings (the CLI's ``--set``), applied last.
    source, method : str, optional
        The CLI's ``--source`` / ``--method``; must agree with the file when both give them.
    options : dict, optional
        ``{section: {key: value}}`` from a command's own options (only those given), applied
        after the file and before ``overrides``.

    Returns
    -------
    Config
    """
    file_values = read_yaml(path) if path is not None else {}
    origin = str(path) if path is not None else "config"
    set_values = [parse_set(text) for text in overrides]
    chosen = {}
    for name, cli_value in (("source", source), ("method", method)):
        from_file = (file_values.get("experiment") or {}).get(name) if isinstance(file_values, dict) else None
        from_set = [s["experiment"][name] for s in set_values if name in s.get("experiment", {})]
        if cli_value is not None and from_file is not None and cli_value != from_file:
            raise ConfigError(f"{origin}: experiment.{name} is {from_file!r} "
                              f"but --{name} {cli_value!r} was given")
        if cli_value is not None and from_set and from_set[-1] != cli_value:
            raise ConfigError(f"--set experiment.{name}={from_set[-1]} contradicts --{name} {cli_value}")
        chosen[name] = from_set[-1] if from_set else cli_value or from_file or getattr(ExperimentConfig, name)
    config = Config()
    _apply(config, method_preset(chosen["source"], chosen["method"]), "preset")
    if file_values:
        _apply(config, file_values, origin)
    if options:
        _apply(config, options, "command-line options")
    for text, values in zip(overrides, set_values):
        _apply(config, values, f"--set {text}")
    try:
        resolve_profile(config)
    except ProfileError as err:
        raise ConfigError(f"{origin}: {err}") from None
    validate(config)
    return config


def validate(config):
    """Cross-field checks that types alone cannot express."""
    method_preset(config.experiment.source, config.experiment.method)
    if config.data.crop_size % 8:
        raise ConfigError(f"data.crop_size must be a multiple of 8 (stride-8 labels), "
                          f"got {config.data.crop_size}")
    if config.pseudo_label.aggregation not in ("probability", "vote"):
        raise ConfigError(f"pseudo_label.aggregation must be probability or vote, "
                          f"got {config.pseudo_label.aggregation!r}")
    if config.data.gta5_frame_size is not None and len(config.data.gta5_frame_size) != 2:
        raise ConfigError(f"data.gta5_frame_size must be [width, height] or null, "
                          f"got {config.data.gta5_frame_size}")
    if len(config.data.scale_range) != 2:
        raise ConfigError(f"data.scale_range must be [low, high], got {config.data.scale_range}")
    values = {f"{s}.{k}": v for s, fields in to_dict(config).items() for k, v in fields.items()}
    problems = [f"{name} {problem}" for name, value in values.items()
                for problem in [range_error(name, value)] if problem]
    problems += order_errors(values)
    if problems:
        raise ConfigError("config: " + "; ".join(problems))


def to_dict(config):
    """Nested plain dict (YAML-serialisable) of a Config."""
    return dataclasses.asdict(config)


def dump_config(config, path):
    """Write the resolved config as YAML that ``load_config`` reads back to an equal Config."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


#: Fields a resumed run may change: they do not change any result (the loader's batches are the
#: same for every number of workers).
RESUMABLE_CHANGES = ("train.loader_workers",)


def config_differences(a, b):
    """Keys ``section.key`` whose values differ between two configs (for refusing a resume)."""
    da, db = to_dict(a), to_dict(b)
    return [f"{s}.{k}: {da[s][k]!r} != {db[s][k]!r}" for s in da for k in da[s]
            if da[s][k] != db[s][k] and f"{s}.{k}" not in RESUMABLE_CHANGES]
