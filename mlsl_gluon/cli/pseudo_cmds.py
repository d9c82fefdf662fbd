"""CLI commands of the pseudo-label step: source statistics (`stats`) and one round's
pseudo-labels (`pseudo-label`), including sharded runs and their combination."""
import json
import logging
from pathlib import Path

import click
from tqdm import tqdm

from .common import load_segmentation_network, open_cityscapes, parse_ctx

logger = logging.getLogger(__name__)


def _parse_grid(value):
    text = str(value).lower().strip()
    try:
        parts = [int(p) for p in text.split("x")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'GH' or 'GHxGW', e.g. 64 or 64x128") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise click.BadParameter(f"{value!r}: expected 'GH' or 'GHxGW' with positive sizes")
    return tuple(parts)


def _parse_shard(value):
    try:
        index, count = (int(p) for p in str(value).split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'i/n', e.g. 0/4") from None
    if not 0 <= index < count:
        raise click.BadParameter(f"{value!r}: need 0 <= i < n")
    return index, count


@click.command("stats", short_help="Source statistics: class mean sizes (Eq. 4) and the spatial prior.")
@click.option("--source", type=click.Choice(["gta5", "synthia"]), required=True,
              help="Source dataset (original folder layout).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Root of the source dataset (GTA5: images/ labels/; SYNTHIA: RGB/ GT/LABELS/).")
@click.option("--list-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Optional list of the source images to use (default: all).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .npz read by the pseudo-label step.")
@click.option("--grid", default="64x128", show_default=True,
              help="Spatial-prior grid 'GH' or 'GHxGW' (cells over the image height x width).")
@click.option("--alpha", type=float, default=1.0, show_default=True,
              help="Additive smoothing of the spatial prior: (n_c + alpha) / (n + C * alpha).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def stats_command(source, data_root, list_file, out, grid, alpha, no_progress):
    """Source statistics: Eq. 4 class mean sizes and the CBST spatial prior, in one file.

    One streaming pass over the source labels (images are not decoded); memory does not grow
    with the number of images."""
    from ..data import GTA5, SYNTHIA, DatasetError
    from ..preflight import check_output_file
    from ..pseudo_labels import SourceStatistics, save_source_stats

    check_output_file(out)
    cls = GTA5 if source == "gta5" else SYNTHIA
    try:
        dataset = cls(str(data_root), list_file=None if list_file is None else str(list_file))
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    counter = SourceStatistics(dataset.num_classes, _parse_grid(grid))
    for i in tqdm(range(len(dataset)), desc=f"{source} statistics", unit="img", disable=no_progress):
        counter.update(dataset.read_label(i))
    sizes = counter.class_mean_sizes()
    save_source_stats(str(out), sizes, counter.spatial_prior(alpha), num_classes=dataset.num_classes,
                      grid=counter.grid, alpha=alpha, num_images=counter.num_images, source=str(data_root))
    click.echo(f"{counter.num_images} {source} images -> {out} (grid {counter.grid[0]}x{counter.grid[1]}, "
               f"additive smoothing alpha={alpha})")
    click.echo("Eq. 4 class mean sizes: " + ", ".join(f"{s:.4f}" for s in sizes))


@click.command("pseudo-label")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Weights of the fixed network (any format `evaluate` reads); not needed with "
                   "--combine.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cityscapes root (leftImg8bit/; gtFine/ is not needed).")
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--list-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Optional list of the target images (e.g. CBST's 505-image subset).")
@click.option("--num-classes", type=click.Choice(["19", "16"]), default=None,
              help="Default: read from the weights.")
@click.option("--width", type=float, default=None,
              help="Network width multiplier (default: from the weights).")
@click.option("--round", "round_idx", type=int, required=True, help="Round number r.")
@click.option("--portion", type=float, required=True, help="Target portion p of class-balanced selection.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Round folder: labels/, weak_labels.json, stats.json, shards/, cache/.")
@click.option("--method", type=click.Choice(["sisc", "si"]), default="sisc", show_default=True,
              help="SISC patches (paper) or single whole-image inference (CBST).")
@click.option("--K", "K", type=int, default=50, show_default=True, help="SISC patches per image.")
@click.option("--patch-size", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patch positions.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Flip averaging.")
@click.option("--include-si/--no-include-si", default=True, show_default=True,
              help="Add the whole-image prediction with count 1 (released code); without it pixels "
                   "no patch covers stay unlabelled.")
@click.option("--aggregation", type=click.Choice(["probability", "vote"]), default="probability",
              show_default=True, help="'vote' = the paper's relative-frequency ablation.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Patches per network call.")
@click.option("--longer-side", type=int, default=None, help="Inference scale (default: native).")
@click.option("--source-stats", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File from `mlsl-gluon stats`: enables pseudo weak labels (and --spatial-prior).")
@click.option("--spatial-prior/--no-spatial-prior", default=False, show_default=True,
              help="Multiply the spatial prior of --source-stats into the probabilities (CBST-SP).")
@click.option("--eta", type=float, default=0.05, show_default=True, help="PWL factor eta.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HDF5 probability cache [default: OUT/cache/round<r>.h5].")
@click.option("--shard", default="0/1", show_default=True,
              help="'i/n': label images i, i+n, ... only (pass 1); finish with --combine.")
@click.option("--combine", is_flag=True,
              help="Merge the n finished shards of --shard '*/n' and write labels.")
@click.option("--regenerate", is_flag=True,
              help="Recreate a cache made with other settings instead of refusing it.")
@click.option("--colour", is_flag=True, help="Also write colour visualisations to OUT/colour/.")
@click.option("--ctx", "ctx_spec", default="cpu", show_default=True, help="'cpu', 'gpu:0', 'gpu:0,1'.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def pseudo_label_command(weights, data_root, split, list_file, num_classes, width, round_idx, portion, out,
                         method, K, patch_size, seed, flip, include_si, aggregation, batch_size,
                         longer_side, source_stats, spatial_prior, eta, cache_path, shard, combine,
                         regenerate, colour, ctx_spec, no_progress):
    """Pseudo-labels of one round (step 1): SI/SISC inference, class-balanced selection and PWL."""
    from ..preflight import check_output_file, check_output_folder
    from ..pseudo_labels import (
        CacheError,
        combine_pseudo_label_round,
        load_source_stats,
        run_pseudo_label_round,
    )
    from ..training.rounds import file_digest

    shard_index, shard_count = _parse_shard(shard)
    check_output_folder(out)
    if cache_path is not None:
        check_output_file(cache_path, "--cache")
    stats = None
    if source_stats is not None:
        try:
            stats = load_source_stats(str(source_stats))
        except ValueError as err:
            raise click.ClickException(str(err)) from None
    elif spatial_prior:
        raise click.UsageError("--spatial-prior needs --source-stats")
    sizes = None if stats is None else stats["class_mean_sizes"]
    if combine:
        try:
            result = combine_pseudo_label_round(str(out), round_idx=round_idx, portion=portion,
                                                num_shards=shard_count, class_mean_sizes=sizes, eta=eta,
                                                save_colour=colour, progress=not no_progress)
        except (CacheError, FileNotFoundError, ValueError) as err:
            raise click.ClickException(str(err)) from None
    else:
        if weights is None or data_root is None:
            raise click.UsageError("--weights and --data-root are needed (except with --combine)")
        try:
            ctx = parse_ctx(ctx_spec)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--ctx") from None
        classes = None if num_classes is None else int(num_classes)
        net, info = load_segmentation_network(weights, ctx, classes, width)
        dataset = open_cityscapes(data_root, split, info["num_classes"], list_file, with_labels=False)
        if stats is not None and stats["num_classes"] != info["num_classes"]:
            raise click.ClickException(f"{source_stats}: statistics of {stats['num_classes']} classes, "
                                       f"the network has {info['num_classes']}")
        try:
            result = run_pseudo_label_round(
                net, dataset, str(out), round_idx=round_idx, portion=portion, ctx=ctx, method=method, K=K,
                patch_size=patch_size, seed=seed, flip=flip, include_si=include_si,
                aggregation=aggregation, batch_size=batch_size, longer_side=longer_side,
                prior=stats["spatial_prior"] if spatial_prior else None, class_mean_sizes=sizes,
                eta=eta, cache_path=None if cache_path is None else str(cache_path),
                checkpoint_digest=file_digest(weights), shard=(shard_index, shard_count),
                regenerate=regenerate, save_colour=colour, progress=not no_progress)
        except CacheError as err:
            raise click.ClickException(str(err)) from None
    click.echo(json.dumps(result, indent=1))


COMMANDS = [stats_command, pseudo_label_command]
