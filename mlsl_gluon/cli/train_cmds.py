"""`mlsl-gluon train`: source-only training or the MLSL rounds of one method."""
import logging

import click

from ..config import METHODS, SOURCES, ConfigError, load_config
from ..profiles import PROFILES
from ..training.inputs import LAYOUT_HELP, InputError

logger = logging.getLogger(__name__)

# "\b" keeps click from re-wrapping the layout table, paragraph by paragraph.
_NO_REWRAP = LAYOUT_HELP.replace("\n\n", "\n\n\b\n")
_HELP = f"""Train one method end to end into the run folder --out, resumably.

\b
Methods: source-only (train from ImageNet weights, or just evaluate a given source model),
cbst (single-inference pseudo-labels, spatial prior for GTA5), cbst-pwl (+ pseudo weak labels),
sisc (SISC patch pseudo-labels, paper Sec. 3.2), sisc-pwl (+ pseudo weak labels, Sec. 3.3).
Defaults are the paper's (6 rounds x 2 epochs, lr 1e-4 / sqrt(2)^r, ...); an experiments/*.yaml
file (--config) and --set section.key=value override them.

\b
{_NO_REWRAP}"""


@click.command("train", help=_HELP)
@click.option("--source", type=click.Choice(SOURCES), default=None,
              help="Source domain (default: from --config, else gta5).")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="Method (default: from --config, else sisc-pwl).")
@click.option("--data-root", type=click.Path(file_okay=False), required=True,
              help="Folder holding GTA5/, SYNTHIA/ and Cityscapes/ (layout above).")
@click.option("--weights", type=click.Path(dir_okay=False), required=True,
              help="Source model (gta_rna-a1_cls19_s8_ep-0000.params or "
                   "synthia_rna-a1_cls16_s8_ep-0000.params), "
                   "or for source-only training ilsvrc-cls_rna-a1_cls1000_ep-0001.params.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run folder to create or resume.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="experiments/*.yaml overriding the defaults (unknown keys are errors).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config field, e.g. --set train.lr=5e-5 (repeatable; applied last).")
@click.option("--profile", type=click.Choice(PROFILES), default=None,
              help="released (the authors' code, default) or paper (its text): sets every field the "
                   "config leaves null (docs/ARCHITECTURE.md, Profiles); --set still overrides one.")
@click.option("--ctx", default="cpu", help="Devices: cpu, gpu, or gpu:0,1 for data parallel training.")
@click.option("--kvstore", default="device",
              help="MXNet kvstore: local, device, dist_sync, dist_device_sync (DMLC_* environment for dist).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last consistent state (refused if the config "
                   "differs in more than the learning rate, logging/checkpoint intervals and evaluation "
                   "options; a finished run is not redone). Give it from the first invocation to make "
                   "the command re-runnable as is after a crash; "
                   "without it an existing run folder is never overwritten.")
@click.option("--break-lock", is_flag=True,
              help="Take over --out's LOCK left by a process on another host (check it is gone first); "
                   "a dead process's lock on this host is taken over without it.")
@click.option("--no-progress", is_flag=True, help="No progress bars (log lines only).")
def train(source, method, data_root, weights, out, config_file, overrides, profile, ctx, kvstore, resume,
          break_lock, no_progress):
    from ..data import DatasetError
    from ..training.checkpoint import CheckpointError
    from ..training.experiment import run_experiment
    from ..training.stage import TrainingStopped
    from .common import parse_ctx

    try:
        ctx_list = parse_ctx(ctx)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--ctx") from None
    try:
        config = load_config(config_file, overrides, source=source, method=method,
                             options={"experiment": {"profile": profile}} if profile else None)
        summary = run_experiment(config, data_root, weights, out, ctx_list, kvstore=kvstore, resume=resume,
                                 progress=not no_progress, break_lock=break_lock)
    except (ConfigError, InputError, DatasetError, CheckpointError, TrainingStopped) as err:
        raise click.ClickException(str(err)) from None
    miou = summary.get("miou")
    click.echo(f"{config.experiment.source} {config.experiment.method}: run folder {out}, "
               f"mIoU {'n/a (no val labels)' if miou is None else f'{100 * miou:.2f}'}"
               + (f", mIoU* {100 * summary['miou13']:.2f}" if summary.get("miou13") is not None else ""))


COMMANDS = [train]
