"""`mlsl-gluon demo`: the whole method on built-in generated data, on CPU, in minutes."""
import logging

import click

logger = logging.getLogger(__name__)

_HELP = """Run the whole method on a generated synthetic -> 'real' street-scene shift.

\b
Generates a seeded source set (GTA5 format) and target set (Cityscapes format) under OUT/data,
trains a reduced-width ResNet-38 source model, adapts it with CBST (SI pseudo-labels), SISC and
SISC+PWL over self-training rounds, evaluates every method on the target val split and prints
the comparison. Measures the mechanisms against the target-train ground truth, which is written
to OUT/truth, outside the data root OUT/data that the runs read: pseudo-label precision and
coverage per round and method, the PWL branch's weak-label and prediction accuracy. Writes
OUT/results.json, OUT/table.txt and OUT/pictures/{grid,miou_per_round,mechanisms}.png. Nothing
is downloaded. Re-running with the same --out and --seed resumes; finished steps are kept."""


@click.command("demo", help=_HELP)
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Demo folder to create or resume.")
@click.option("--seed", type=int, default=0, help="Seeds the generated data and every run.")
@click.option("--preset", type=click.Choice(["full", "tiny"]), default="full",
              help="full: the demo (about 10 min on one CPU core); tiny: a one-minute smoke run of "
                   "the same pipeline whose numbers mean nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bars (log lines only).")
def demo(out, seed, preset, no_progress):
    from ..config import ConfigError
    from ..data import DatasetError
    from ..demo.presets import PRESETS
    from ..demo.run import run_demo
    from ..training.inputs import InputError
    from ..training.stage import TrainingStopped

    try:
        results, table = run_demo(out, seed=seed, settings=PRESETS[preset], progress=not no_progress)
    except (ConfigError, InputError, DatasetError, TrainingStopped, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(table)
    pictures = ", ".join(str(path) for path in results["pictures"].values())
    click.echo(f"results: {out}/results.json; pictures: {pictures}; {results['elapsed_s']:.0f} s")


COMMANDS = [demo]
