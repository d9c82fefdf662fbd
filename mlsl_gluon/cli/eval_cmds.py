"""CLI commands around a trained network: evaluate, predict, export, and the paper tables."""
import logging
from pathlib import Path

import click
from PIL import Image

from .. import __version__
from ..preflight import check_output_file, check_output_folder
from .common import (
    check_weights_file,
    load_segmentation_network,
    open_cityscapes,
    parse_ctx,
    parse_scales,
)

logger = logging.getLogger(__name__)

_WEIGHTS_OPTION_HELP = ("Weight file: an ademxapp/CBST .params file (e.g. "
                        "gta_rna-a1_cls19_s8_ep-0000.params), an MLSL-PWL file of the authors' code, "
                        "a checkpoint or final.params from `mlsl-gluon train`, or the params of "
                        "`mlsl-gluon export --format symbol`. The format is detected from its keys.")


def _ctx_option(function, help_text="Devices: 'cpu', 'gpu:0' or 'gpu:0,1' (images spread over them)."):
    return click.option("--ctx", "ctx_spec", default="cpu", show_default=True, help=help_text)(function)


def _trace_ctx_option(function):
    return _ctx_option(function, "Device used to trace the graph: 'cpu' or 'gpu:0'.")


def _network_options(function):
    function = click.option("--width", type=float, default=None,
                            help="Channel width multiplier of the network; default: read from the "
                                 "weights (conv1a channels / 64).")(function)
    function = click.option("--num-classes", type=click.Choice(["19", "16"]), default=None,
                            help="19 (GTA5 setting) or 16 (SYNTHIA setting); default: read from the "
                                 "weights and checked against them when given.")(function)
    return click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), required=True,
                        help=_WEIGHTS_OPTION_HELP)(function)


def _inference_options(function):
    function = click.option("--scales", "scales_spec", default="1.0", show_default=True,
                            help="Comma-separated input scales whose probabilities are averaged, "
                                 "e.g. 0.75,1.0,1.25.")(function)
    return click.option("--flip/--no-flip", default=True, show_default=True,
                        help="Average with the horizontally flipped image.")(function)


def _parse(parser, value, option):
    try:
        return parser(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


def _load(weights, num_classes, width, ctx):
    return load_segmentation_network(weights, ctx, None if num_classes is None else int(num_classes), width)


@click.command("evaluate")
@_network_options
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Cityscapes root holding leftImg8bit/ and gtFine/.")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True,
              help="Cityscapes split evaluated (the paper reports val).")
@click.option("--list-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Optional CBST-style list of the images to evaluate (default: the whole split).")
@_inference_options
@_ctx_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder for iou.json, iou.txt and confusion_matrix.json "
                   "[default: eval/<weights file stem>].")
@click.option("--save-predictions", is_flag=True,
              help="Also write every prediction as a Cityscapes labelId PNG under OUT/predictions "
                   "(the input format of the official cityscapesscripts evaluator).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def evaluate_command(weights, num_classes, width, data_root, split, list_file, flip, scales_spec,
                     ctx_spec, out, save_predictions, no_progress):
    """Evaluate a network on Cityscapes at native resolution: per-class IoU, mIoU (and mIoU* for
    16 classes), written to the run folder and printed (paper Sec. 4.2)."""
    from ..evaluation import evaluate, format_per_class, write_evaluation

    ctx = _parse(parse_ctx, ctx_spec, "--ctx")
    scales = _parse(parse_scales, scales_spec, "--scales")
    out = out if out is not None else Path("eval") / weights.stem
    check_output_folder(out)
    # Check both inputs before building the network, so nothing starts half-way.
    check_weights_file(weights)
    open_cityscapes(data_root, split, int(num_classes or 19), list_file)
    net, info = _load(weights, num_classes, width, ctx)
    dataset = open_cityscapes(data_root, split, info["num_classes"], list_file)
    matrix = evaluate(net, dataset, ctx, flip=flip, scales=scales,
                      prediction_dir=out / "predictions" if save_predictions else None,
                      progress=not no_progress)
    metadata = {"weights": str(weights), "weights_format": info["format"], "width": info["width"],
                "data_root": str(data_root), "split": split, "images": len(dataset),
                "list_file": None if list_file is None else str(list_file), "flip": flip,
                "scales": list(scales), "ctx": ctx_spec, "version": __version__}
    summary = write_evaluation(out, matrix, metadata)
    click.echo(format_per_class(summary), nl=False)
    click.echo(f"results in {out}")


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_network_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for <name>_pred.png, <name>_overlay.png and legend.png.")
@_inference_options
@_ctx_option
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Weight of the class colours in the overlay.")
@click.option("--label-ids", is_flag=True,
              help="Also write <name>_labelIds.png with Cityscapes label ids.")
@click.option("--tile", "tile_spec", default="1024,2048", show_default=True,
              help="H,W of the window larger images are segmented in (overlapping windows, "
                   "stitched), which bounds the memory; smaller images are segmented whole.")
@click.option("--tile-margin", type=click.IntRange(0), default=128, show_default=True,
              help="Context pixels kept around each stitched window core.")
@click.option("--no-progress", is_flag=True, help="No progress bars (log lines only).")
def predict_command(images, weights, num_classes, width, out, flip, scales_spec, ctx_spec, alpha,
                    label_ids, tile_spec, tile_margin, no_progress):
    """Segment IMAGE files: colour-coded prediction and overlay PNGs (Cityscapes palette) and a
    legend image. Images larger than --tile are segmented in overlapping windows."""
    from ..data import read_image
    from ..data.classes import class_names, palette
    from ..data.common import image_size
    from ..evaluation import predict_labels, save_label_id_png
    from ..evaluation.tiling import tiled_predict_labels
    from ..evaluation.visualize import colorize, legend, overlay

    ctx = _parse(parse_ctx, ctx_spec, "--ctx")
    scales = _parse(parse_scales, scales_spec, "--scales")
    tile = _parse(_input_size, tile_spec, "--tile")
    check_output_folder(out)
    if min(tile) < 2 * tile_margin + 8:
        raise click.BadParameter(f"{tile_margin} leaves no window core in a --tile of {tile_spec}; "
                                 f"use a margin below {(min(tile) - 8) // 2 + 1}", param_hint="--tile-margin")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise click.ClickException(f"image file(s) not found: {', '.join(missing)}")
    for path in images:
        image_size(path)  # every input is an image before the first network call
    stems = [p.stem.replace("_leftImg8bit", "") for p in images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise click.ClickException(f"several inputs would write the same outputs: {duplicates}; "
                                   "predict them into different --out folders")
    net, info = _load(weights, num_classes, width, ctx)
    colors = palette(info["num_classes"])
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(legend(class_names(info["num_classes"]), colors)).save(out / "legend.png")

    def write(path, stem, image, pred):
        color = colorize(pred, colors)
        Image.fromarray(color).save(out / f"{stem}_pred.png")
        Image.fromarray(overlay(image, color, alpha)).save(out / f"{stem}_overlay.png")
        if label_ids:
            save_label_id_png(out / f"{stem}_labelIds.png", pred, info["num_classes"])
        logger.info("%s -> %s", path, out / f"{stem}_pred.png")

    def flush(batch):
        # Images that fit one window run whole, one per device at a time, as in `evaluate`.
        preds = predict_labels(net, [image for _, _, image in batch], ctx[:len(batch)], flip, scales)
        for (path, stem, image), pred in zip(batch, preds):
            write(path, stem, image, pred)
        batch.clear()

    whole = []
    for number, (path, stem) in enumerate(zip(images, stems), start=1):
        size = image_size(path)
        if size[0] <= tile[1] and size[1] <= tile[0]:
            whole.append((path, stem, read_image(path)))
            if len(whole) == len(ctx):
                flush(whole)
            continue
        image = read_image(path)
        pred = tiled_predict_labels(net, image, ctx, flip, scales, tile=tile, margin=tile_margin,
                                    progress=not no_progress, desc=f"{path.name} ({number}/{len(images)})")
        write(path, stem, image, pred)
    if whole:
        flush(whole)
    click.echo(f"wrote {len(images)} prediction(s) and legend.png to {out}")


def _input_size(text):
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"bad input size {text!r}: expected H,W, e.g. 1024,2048") from None
    if height < 8 or width < 8:
        raise ValueError(f"bad input size {text!r}: H and W must be >= 8")
    return height, width


@click.command("export")
@_network_options
@click.option("--format", "fmt", type=click.Choice(["symbol", "onnx"]), required=True,
              help="symbol: <OUT>-symbol.json + <OUT>-0000.params (MXNet, any input size); "
                   "onnx: <OUT>.onnx with a fixed input shape.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output prefix (folders are created).")
@click.option("--input-size", "size_spec", default="1024,2048", show_default=True,
              help="H,W of the input: traced for symbol, fixed in the ONNX graph.")
@_trace_ctx_option
def export_command(weights, num_classes, width, fmt, out, size_spec, ctx_spec):
    """Export the segmentation network (input 'data' (1,3,H,W) normalised RGB; output stride-8
    class logits (1,C,ceil(H/8),ceil(W/8))) for deployment."""
    from ..model import export_onnx, export_symbol

    ctx = _parse(parse_ctx, ctx_spec, "--ctx")
    height, width_px = _parse(_input_size, size_spec, "--input-size")
    check_output_file(Path(f"{out}.onnx") if fmt == "onnx" else Path(f"{out}-symbol.json"))
    net, _ = _load(weights, num_classes, width, ctx[:1])
    shape = (1, 3, height, width_px)
    if fmt == "symbol":
        files = export_symbol(net, out, input_shape=shape)
    else:
        files = (export_onnx(net, Path(f"{out}.onnx"), input_shape=shape),)
    click.echo("wrote " + ", ".join(str(f) for f in files))


def _result_pair(text):
    # the last '=' splits: table4 keys hold one themselves (eta=0.05=PATH)
    key, sep, path = text.rpartition("=")
    if not sep or not key or not path:
        raise ValueError(f"bad --result {text!r}: expected METHOD=PATH, e.g. sisc=runs/gta_sisc/eval")
    return key, Path(path)


@click.command("table")
@click.option("--table", "table", type=click.Choice(["table1", "table2", "table4"]), required=True,
              help="table1: GTA5 -> Cityscapes; table2: SYNTHIA -> Cityscapes; table4: SISC+PWL "
                   "lambda_cls / eta ablation.")
@click.option("--result", "results", multiple=True, required=True,
              help="METHOD=PATH, repeatable: a method (source-only, cbst, cbst-pwl, sisc, sisc-pwl; "
                   "table4: lambda_cls=0.1, eta=0.05, ...) and its evaluation folder or iou.json.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write <table>.md, .txt and .json into this folder.")
@click.option("--paper-tables", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML of the published numbers [default: experiments/paper_tables.yaml].")
def table_command(table, results, out, paper_tables):
    """Print our results beside the paper's published rows (percent, with differences)."""
    from ..evaluation import format_table, load_paper_tables, write_table

    if out is not None:
        check_output_folder(out)
    pairs = {}
    for text in results:
        key, path = _parse(_result_pair, text, "--result")
        pairs[key] = path
    try:
        paper = load_paper_tables(paper_tables)
        click.echo(format_table(table, pairs, paper), nl=False)
        if out is not None:
            paths = write_table(out, table, pairs, paper)
            click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    except ValueError as err:
        raise click.ClickException(str(err)) from None


COMMANDS = [evaluate_command, predict_command, export_command, table_command]
