#!/usr/bin/env python
"""Check a weights file of any supported format against MLSLNet and write it in another.

SRC may be any format :func:`mlsl_gluon.model.weight_files.inspect_weights` knows (ademxapp
ImageNet/CBST/MLSL-PWL, our weights, a training checkpoint, exported params). DST is written
as our :func:`mlsl_gluon.model.save_weights` file (``--to gluon``) or in the ademxapp/MLSL key
format of the authors' code (``--to ademxapp``: 203 keys with the classification branch, 195
without), which their MXNet scripts load.

Examples
--------
    python tools/convert_weights.py gta_rna-a1_cls19_s8_ep-0000.params models/gta_source.params
    python tools/convert_weights.py ilsvrc-cls_rna-a1_cls1000_ep-0001.params models/imagenet.params \
        --num-classes 19
    python tools/convert_weights.py runs/gta5_sisc_pwl/final.params gta_mlsl_pwl.params \
        --to ademxapp --with-classifier
    python tools/convert_weights.py synthia_rna-a1_cls16_s8_ep-0000.params --check-only
"""
import logging

import click
import mxnet as mx

from mlsl_gluon.model import MLSLNet, init_params, save_ademxapp_params, save_weights
from mlsl_gluon.model.weight_files import WeightsError, inspect_weights, load_network_weights


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", required=False, type=click.Path(dir_okay=False))
@click.option("--num-classes", type=int, default=None,
              help="C of the network; default: read from the file (needed for the ImageNet model).")
@click.option("--width", type=float, default=None,
              help="Channel width multiplier; default: read from the file (conv1a channels / 64).")
@click.option("--with-classifier", is_flag=True,
              help="Also write the image classification branch (converted when SRC has one, "
                   "freshly initialised otherwise).")
@click.option("--to", "target", type=click.Choice(["gluon", "ademxapp"]), default="gluon",
              help="gluon: our save_weights file; ademxapp: the key format of the authors' code.")
@click.option("--check-only", is_flag=True, help="Only validate SRC against the network.")
def main(src, dst, num_classes, width, with_classifier, target, check_only):
    """Validate weights SRC against MLSLNet and write them to DST."""
    if dst is None and not check_only:
        raise click.UsageError("give DST or --check-only")
    try:
        info = inspect_weights(src)
    except WeightsError as err:
        raise click.ClickException(str(err)) from None
    if num_classes is None:
        if info.num_classes is None:
            raise click.UsageError("{} is the ImageNet model (no linear<C>): give --num-classes".format(src))
        num_classes = info.num_classes
    if width is None:
        width = 1.0 if info.width is None else info.width
    net = MLSLNet(num_classes=num_classes, width=width, with_classifier=with_classifier)
    init_params(net, ctx=mx.cpu())
    try:
        load_network_weights(net, src, ctx=mx.cpu())
    except WeightsError as err:
        raise click.ClickException(str(err)) from None
    click.echo("{} ({}): matches MLSLNet(num_classes={}, width={:g}, with_classifier={})".format(
        src, info.format, num_classes, width, with_classifier))
    if not check_only:
        (save_ademxapp_params if target == "ademxapp" else save_weights)(net, dst)
        click.echo("wrote {} ({} format)".format(dst, target))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(prog_name="convert_weights.py")
