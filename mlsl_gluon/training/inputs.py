"""What a training run reads: the data sets under ``--data-root`` and the ``--weights`` file.

Everything is checked before anything starts, and a missing piece gives a message that says
exactly what to obtain and where to put it.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..data import GTA5, SYNTHIA, Cityscapes, DatasetError
from ..data.gta5 import GTA5_SIZE
from ..model.weight_files import WeightsError, inspect_weights
from ..pseudo_labels.source_stats import load_source_stats, write_source_stats

logger = logging.getLogger(__name__)

SOURCE_WEIGHTS = {"gta5": "gta_rna-a1_cls19_s8_ep-0000.params",
                  "synthia": "synthia_rna-a1_cls16_s8_ep-0000.params"}
IMAGENET_WEIGHTS = "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"

LAYOUT_HELP = """\
Expected layout of --data-root (folder names configurable: data.gta5_dir, data.synthia_dir,
data.cityscapes_dir):

  DATA_ROOT/GTA5/images/NNNNN.png          GTA5 frames (download.visinf.tu-darmstadt.de/data/from_games)
  DATA_ROOT/GTA5/labels/NNNNN.png          GTA5 palette labels (indices = Cityscapes label ids)
  DATA_ROOT/SYNTHIA/RGB/NNNNNNN.png        SYNTHIA-RAND-CITYSCAPES images (synthia-dataset.net)
  DATA_ROOT/SYNTHIA/GT/LABELS/NNNNNNN.png  its 16-bit labels
  DATA_ROOT/Cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png   (cityscapes-dataset.com:
  DATA_ROOT/Cityscapes/gtFine/val/<city>/*_gtFine_labelIds.png             leftImg8bit_trainvaltest.zip,
                                                                           gtFine_trainvaltest.zip)

Weights (--weights): the CBST source model gta_rna-a1_cls19_s8_ep-0000.params (GTA5) or
synthia_rna-a1_cls16_s8_ep-0000.params (SYNTHIA) from the CBST release (github.com/yzou2/CBST);
for source-only training from ImageNet, ilsvrc-cls_rna-a1_cls1000_ep-0001.params (ademxapp).
"""


class InputError(ValueError):
    """A data set or weight file that a run needs is missing or malformed."""


@dataclass
class RunData:
    """The data sets of one run."""

    source: object  # GTA5 or SYNTHIA reader
    target_train: object  # Cityscapes train, labels unused
    target_val: Optional[object]  # Cityscapes val with labels, None when they are absent


def _open(what, make, folder, obtain):
    try:
        return make()
    except DatasetError as err:
        raise InputError(f"{what} not usable at {folder}: {err}\n{obtain}\n\n{LAYOUT_HELP}") from None


def open_datasets(config, data_root, need_val=True):
    """Open source, target-train and target-val readers of ``config`` under ``data_root``.

    Raises
    ------
    InputError
        Naming the folder and what to download when a data set is missing or malformed.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise InputError(f"--data-root {data_root} does not exist.\n\n{LAYOUT_HELP}")
    data = config.data
    if config.experiment.source == "gta5":
        folder = data_root / data.gta5_dir
        frame_size = None if data.gta5_frame_size is None else tuple(data.gta5_frame_size)
        kwargs = {} if frame_size == GTA5_SIZE else {"frame_size": frame_size}
        source = _open("GTA5", lambda: GTA5(folder, list_file=data.source_list, **kwargs), folder,
                       "Obtain GTA5 ('Playing for Data', images + labels zips) and unpack it there.")
    else:
        folder = data_root / data.synthia_dir
        source = _open("SYNTHIA", lambda: SYNTHIA(folder, list_file=data.source_list), folder,
                       "Obtain SYNTHIA-RAND-CITYSCAPES and unpack it there (RGB/ and GT/LABELS/).")
    cs = data_root / data.cityscapes_dir
    obtain = ("Obtain Cityscapes leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
              "and unpack both there.")
    target_train = _open("Cityscapes train", lambda: Cityscapes(
        cs, "train", config.num_classes, list_file=data.target_train_list, with_labels=False), cs, obtain)
    target_val = None
    if need_val and config.eval.enabled:
        target_val = _open("Cityscapes val", lambda: Cityscapes(
            cs, "val", config.num_classes, list_file=data.target_val_list, with_labels=True), cs, obtain)
    logger.info("source %r, target train %d images, target val %s", source, len(target_train),
                "none" if target_val is None else f"{len(target_val)} images")
    return RunData(source, target_train, target_val)


def weights_kind(path, num_classes, width=None):
    """What a weights file holds, so a run can tell a source model from an ImageNet one.

    Returns
    -------
    str
        ``'source'`` (an ademxapp/CBST or MLSL-PWL segmentation model), ``'imagenet'`` (the
        ademxapp ImageNet trunk) or ``'gluon'`` (our own weights, training checkpoint or
        exported params); see :func:`mlsl_gluon.model.weight_files.inspect_weights`.

    Raises
    ------
    InputError
        When the file is missing, unreadable, of another class count or (``width`` given) of
        another width, with what to obtain.
    """
    path = Path(path)
    wanted = SOURCE_WEIGHTS["gta5" if num_classes == 19 else "synthia"]
    if not path.is_file():
        raise InputError(f"weights file {path} not found. Obtain {wanted} (CBST source model, "
                         f"github.com/yzou2/CBST) or, to train the source model, {IMAGENET_WEIGHTS} "
                         f"(ademxapp), and pass its path with --weights.")
    try:
        info = inspect_weights(path)
    except WeightsError as err:
        raise InputError(f"weights file {path} is not usable: {err}") from None
    if info.segmentation and info.num_classes != num_classes:
        raise InputError(f"weights file {path} has head linear{info.num_classes} but this run has "
                         f"{num_classes} classes; use {wanted}")
    if width is not None and info.width is not None and abs(info.width - width) > 1e-9:
        raise InputError(f"{path}: holds a network of width {info.width:g} (conv1a channels / 64) but "
                         f"model.width is {width:g}; pass --set model.width={info.width:g} or weights of "
                         f"width {width:g}")
    return info.kind


def check_source_stats(config):
    """A given source-statistics file must be readable and match the run (checked up front)."""
    given = config.pseudo_label.source_stats
    if not given or not (config.use_pwl or config.pseudo_label.spatial_prior):
        return
    path = Path(given)
    if not path.is_file():
        raise InputError(f"{path}: pseudo_label.source_stats not found; make it with `mlsl-gluon stats`, "
                         "or set it to null to compute it in the run folder")
    try:
        stats = load_source_stats(str(path))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a source statistics file from `mlsl-gluon stats` ({err}); make it "
                         "again with `mlsl-gluon stats`") from None
    if stats["num_classes"] != config.num_classes:
        raise InputError(f"{path}: source statistics for {stats['num_classes']} classes, this run has "
                         f"{config.num_classes}; make them from the {config.experiment.source} labels")


def source_statistics(run, config, source, progress=True):
    """Eq. 4 class sizes m_i and the CBST spatial prior of the source set.

    Read from ``pseudo_label.source_stats`` when given (``mlsl-gluon stats`` writes it), else
    computed once from the source labels into ``<run>/source_stats.npz``.

    Returns
    -------
    dict
        ``class_mean_sizes`` (C,) and ``spatial_prior`` (C, gh, gw), as ``load_source_stats``.
    """
    given = config.pseudo_label.source_stats
    path = Path(given) if given else run.path / "source_stats.npz"
    if path.is_file():
        stats = load_source_stats(str(path))
        if stats["num_classes"] != config.num_classes:
            raise InputError(f"{path}: source statistics for {stats['num_classes']} classes, "
                             f"this run has {config.num_classes}")
        return stats
    if given:
        raise InputError(f"pseudo_label.source_stats {path} not found (make it with `mlsl-gluon stats`, or "
                         f"set it to null to compute it in the run folder)")
    counter = write_source_stats(str(path), source, progress=progress)
    logger.info("wrote Eq. 4 class sizes and the spatial prior of %d source images to %s",
                counter.num_images, path)
    return load_source_stats(str(path))
