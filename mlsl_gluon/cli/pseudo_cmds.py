"""CLI commands of the pseudo-label step: source statistics (`stats`) and one round's
pseudo-labels (`pseudo-label`), including sharded runs and their combination."""
import json
import logging
from pathlib import Path

import click

from ..config import METHODS, SOURCES, ConfigError, load_config, pseudo_label_settings
from ..profiles import PROFILES
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
    from ..pseudo_labels.source_stats import write_source_stats

    check_output_file(out)

    cls = GTA5 if source == "gta5" else SYNTHIA
    try:
        dataset = cls(str(data_root), list_file=None if list_file is None else str(list_file))
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    counter = write_source_stats(str(out), dataset, grid=_parse_grid(grid), alpha=alpha,
                                 desc=f"{source} statistics", progress=not no_progress)
    sizes = counter.class_mean_sizes()
    click.echo(f"{counter.num_images} {source} images -> {out} (grid {counter.grid[0]}x{counter.grid[1]}, "
               f"additive smoothing alpha={alpha})")
    click.echo("Eq. 4 class mean sizes: " + ", ".join(f"{s:.4f}" for s in sizes))


# Options of `pseudo-label` that set a config field: left unset (None), the field keeps the value
# of the (source, method) preset / --config, exactly as `train` would use it.
CONFIG_OPTIONS = {
    "K": ("pseudo_label", "K"), "patch_size": ("pseudo_label", "patch_size"),
    "seed": ("experiment", "seed"), "flip": ("pseudo_label", "flip"),
    "include_si": ("pseudo_label", "include_si_released"), "aggregation": ("pseudo_label", "aggregation"),
    "batch_size": ("pseudo_label", "batch_size"), "longer_side": ("pseudo_label", "longer_side"),
    "spatial_prior": ("pseudo_label", "spatial_prior"), "eta": ("pseudo_label", "eta"),
    "profile": ("experiment", "profile"),
}
_FROM_CONFIG = " [default: the value `train` uses for this source and method]"


def _config_of(config_file, overrides, source, method, given):
    """The Config the given options describe, as `train` would resolve it."""
    options = {}
    for name, value in given.items():
        if value is not None:
            section, key = CONFIG_OPTIONS[name]
            options.setdefault(section, {})[key] = value
    try:
        config = load_config(config_file, overrides, source=source, method=method, options=options)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    if config.experiment.method == "source-only":
        raise click.UsageError(f"{config_file}: method source-only has no pseudo-labels; pass --method")
    return config


def _load_stats(path, settings, num_classes):
    from ..pseudo_labels import load_source_stats

    if path is None:
        needs = [what for what, on in (("--spatial-prior", settings.spatial_prior),
                                       ("pseudo weak labels (a -pwl method)", settings.weak_labels)) if on]
        if needs:
            raise click.UsageError(f"{' and '.join(needs)}: need --source-stats (from `mlsl-gluon stats`); "
                                   f"or choose --no-spatial-prior / a method without -pwl")
        return None
    try:
        stats = load_source_stats(str(path))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if stats["num_classes"] != num_classes:
        raise click.ClickException(f"{path}: statistics of {stats['num_classes']} classes, this source has "
                                   f"{num_classes}")
    return stats


@click.command("pseudo-label")
@click.option("--source", type=click.Choice(SOURCES), default=None,
              help="Source domain of the network (default: the config file's, else gta5); sets the "
                   "class count and, as for `train`, the defaults below.")
@click.option("--method", type=click.Choice([m for m in METHODS if m != "source-only"]), default=None,
              help="cbst* = single whole-image inference, sisc* = SISC patches (paper); -pwl also writes "
                   "pseudo weak labels (default: the config file's, else sisc-pwl).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="experiments/*.yaml, as for `train`.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config field, as for `train` (applied last).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Weights of the fixed network (any format `evaluate` reads); not needed to "
                   "combine shards.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cityscapes root (leftImg8bit/; gtFine/ is not needed).")
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--list-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Optional list of the target images (e.g. CBST's 505-image subset).")
@click.option("--width", type=float, default=None,
              help="Network width multiplier (default: from the weights).")
@click.option("--round", "round_idx", type=int, required=True, help="Round number r.")
@click.option("--portion", type=float, default=None,
              help="Target portion p of class-balanced selection [default: p_r of the config].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Round folder: labels/, weak_labels.json, stats.json, shards/, probabilities*.h5 "
                   "(`train` uses RUN/round_<rr>/pseudo).")
@click.option("--profile", type=click.Choice(PROFILES), default=None,
              help="released or paper: K and the threshold sampling, as for `train`." + _FROM_CONFIG)
@click.option("--K", "K", type=int, default=None, help="SISC patches per image." + _FROM_CONFIG)
@click.option("--patch-size", type=int, default=None, help="SISC patch side." + _FROM_CONFIG)
@click.option("--seed", type=int, default=None,
              help="Run seed; round r's patch positions derive from it as in `train`." + _FROM_CONFIG)
@click.option("--flip/--no-flip", default=None, help="Flip averaging." + _FROM_CONFIG)
@click.option("--include-si/--no-include-si", default=None,
              help="Add the whole-image prediction with count 1 (released code); without it pixels "
                   "no patch covers stay unlabelled." + _FROM_CONFIG)
@click.option("--aggregation", type=click.Choice(["probability", "vote"]), default=None,
              help="'vote' = the paper's relative-frequency ablation." + _FROM_CONFIG)
@click.option("--batch-size", type=int, default=None, help="Patches per network call." + _FROM_CONFIG)
@click.option("--longer-side", type=int, default=None,
              help="Inference scale: longer image side in pixels." + _FROM_CONFIG)
@click.option("--source-stats", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File from `mlsl-gluon stats`: needed for pseudo weak labels and the spatial prior.")
@click.option("--spatial-prior/--no-spatial-prior", default=None,
              help="Multiply the spatial prior of --source-stats into the probabilities (CBST-SP; on for "
                   "gta5)." + _FROM_CONFIG)
@click.option("--eta", type=float, default=None, help="PWL factor eta." + _FROM_CONFIG)
@click.option("--shard", default="0/1", show_default=True,
              help="'i/n': label images i, i+n, ... only (pass 1); finish with --combine.")
@click.option("--combine", is_flag=True,
              help="Merge the n finished shards of --shard '*/n' and write labels.")
@click.option("--regenerate", is_flag=True,
              help="Recreate a cache made with other settings instead of refusing it.")
@click.option("--colour", is_flag=True, help="Also write colour visualisations to OUT/colour/.")
@click.option("--ctx", "ctx_spec", default="cpu", show_default=True, help="'cpu', 'gpu:0', 'gpu:0,1'.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def pseudo_label_command(source, method, config_file, overrides, weights, data_root, split, list_file, width,
                         round_idx, portion, out, profile, K, patch_size, seed, flip, include_si, aggregation,
                         batch_size, longer_side, source_stats, spatial_prior, eta, shard, combine,
                         regenerate, colour, ctx_spec, no_progress):
    """Pseudo-labels of one round (step 1): SI/SISC inference, class-balanced selection and PWL.

    Settings, cache, patch seeds and folder layout are those of `train`, so a round made here
    (whole or in shards) is reused by `train` and the other way round."""
    from ..preflight import check_output_folder
    from ..pseudo_labels import CacheError, combine_pseudo_label_round, run_pseudo_label_round
    from ..pseudo_labels.round import RoundFolder, file_digest

    check_output_folder(out)
    config = _config_of(config_file, overrides, source, method, dict(
        profile=profile, K=K, patch_size=patch_size, seed=seed, flip=flip, include_si=include_si,
        aggregation=aggregation, batch_size=batch_size, longer_side=longer_side, spatial_prior=spatial_prior,
        eta=eta))
    settings = pseudo_label_settings(config)
    portion = settings.portion(round_idx) if portion is None else portion
    folder = RoundFolder(str(out), round_idx, _parse_shard(shard), colour=colour)
    stats = _load_stats(source_stats, settings, config.num_classes)
    if combine:
        sizes = stats["class_mean_sizes"] if settings.weak_labels else None
        try:
            result = combine_pseudo_label_round(folder, portion=portion, num_shards=folder.shard[1],
                                                class_mean_sizes=sizes, eta=settings.eta,
                                                progress=not no_progress)
        except (CacheError, FileNotFoundError, ValueError) as err:
            raise click.ClickException(str(err)) from None
    else:
        if weights is None or data_root is None:
            raise click.UsageError("--weights and --data-root are needed (except with --combine)")
        try:
            ctx = parse_ctx(ctx_spec)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--ctx") from None
        net, info = load_segmentation_network(weights, ctx, None, width)
        if info["num_classes"] != config.num_classes:
            raise click.ClickException(
                f"{weights}: a {info['num_classes']}-class model, but source {config.experiment.source} has "
                f"{config.num_classes} classes; pass the matching --source")
        dataset = open_cityscapes(data_root, split, config.num_classes, list_file, with_labels=False)
        try:
            result = run_pseudo_label_round(
                net, dataset, folder, portion=portion, ctx=ctx, settings=settings, source_stats=stats,
                checkpoint_digest=file_digest(weights), regenerate=regenerate, progress=not no_progress)
        except CacheError as err:
            raise click.ClickException(str(err)) from None
    click.echo(json.dumps(result, indent=1))


COMMANDS = [stats_command, pseudo_label_command]
