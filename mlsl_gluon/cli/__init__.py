"""The `mlsl-gluon` command line. Each command lives in the module of its concern."""
import logging

import click

from .. import __version__
from . import data_cmds, demo_cmds, eval_cmds, pseudo_cmds, train_cmds


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mlsl-gluon")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level instead of INFO.")
def main(verbose):
    """MLSL (Iqbal & Ali, WACV 2020) in MXNet/Gluon: SISC pseudo-labels and pseudo weak labels
    for unsupervised domain adaptation of semantic segmentation (GTA5/SYNTHIA -> Cityscapes)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _module in (data_cmds, pseudo_cmds, train_cmds, eval_cmds, demo_cmds):
    for _command in _module.COMMANDS:
        main.add_command(_command)
