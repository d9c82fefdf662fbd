#!/usr/bin/env python
"""Check an ademxapp/CBST ``.params`` file against MLSLNet and write it in our format.

The output is a :func:`mlsl_gluon.model.save_weights` file (Gluon structured names) that
``load_weights`` reads back. The classification branch is not in ademxapp files: it is left
out of the output unless ``--with-classifier`` (then it holds freshly initialised values).

Examples
--------
    python tools/convert_weights.py gta_rna-a1_cls19_s8_ep-0000.params models/gta_source.params
    python tools/convert_weights.py ilsvrc-cls_rna-a1_cls1000_ep-0001.params models/imagenet.params \
        --num-classes 19 --allow-missing
    python tools/convert_weights.py synthia_rna-a1_cls16_s8_ep-0000.params --check-only
"""
import logging
import re

import click
import mxnet as mx

from mlsl_gluon.model import MLSLNet, init_params, load_ademxapp_params, save_weights


def classes_in_file(path):
    """C from the file's ``linear<C>`` segmentation layer, or None (e.g. the ImageNet file)."""
    found = set()
    for key in mx.nd.load(str(path)):
        match = re.match(r"^arg:linear(\d+)_weight$", key)
        if match and match.group(1) != "1000":
            found.add(int(match.group(1)))
    if len(found) > 1:
        raise click.ClickException("{}: several classifier layers linear{}".format(path, sorted(found)))
    return found.pop() if found else None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", required=False, type=click.Path(dir_okay=False))
@click.option("--num-classes", type=int, default=None,
              help="C of the network; default: read from the file's linear<C> layer.")
@click.option("--width", type=float, default=1.0, help="Channel width multiplier of the network.")
@click.option("--allow-missing", is_flag=True,
              help="Accept files without the segmentation head (ImageNet weights).")
@click.option("--with-classifier", is_flag=True,
              help="Also write the (initialised, not converted) image classification branch.")
@click.option("--check-only", is_flag=True, help="Only validate SRC against the network.")
def main(src, dst, num_classes, width, allow_missing, with_classifier, check_only):
    """Validate ademxapp weights SRC against MLSLNet and write them to DST in our format."""
    if dst is None and not check_only:
        raise click.UsageError("give DST or --check-only")
    file_classes = classes_in_file(src)
    if num_classes is None:
        if file_classes is None:
            raise click.UsageError("{} has no linear<C> layer: give --num-classes".format(src))
        num_classes = file_classes
    net = MLSLNet(num_classes=num_classes, width=width, with_classifier=with_classifier)
    init_params(net, ctx=mx.cpu())
    try:
        report = load_ademxapp_params(net, src, allow_missing=allow_missing)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo("{}: {} arrays match MLSLNet(num_classes={}, width={}); missing {}, ignored {}".format(
        src, len(report["loaded"]), num_classes, width, len(report["missing"]), len(report["ignored"])))
    if not check_only:
        save_weights(net, dst)
        click.echo("wrote {}".format(dst))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(prog_name="convert_weights.py")
