"""`mlsl-gluon prepare ...`: check dataset folders and write list files."""
import click

from ..data import DatasetError
from ..data import prepare as prep

_DATASET = click.option("--dataset", type=click.Choice(prep.DATASETS), required=True,
                        help="Dataset whose original folder layout ROOT holds.")
_ROOT = click.option("--root", type=click.Path(file_okay=False), required=True, help="Dataset root folder.")
_SPLIT = click.option("--split", type=click.Choice(["train", "val", "test"]), default="train",
                      show_default=True, help="Cityscapes split.")


@click.group()
def prepare():
    """Check dataset folders and write CBST-style list files."""


@prepare.command("check")
@_DATASET
@_ROOT
@_SPLIT
@click.option("--decode", is_flag=True, help="Also decode every pair through the reader (slow).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def check(dataset, root, split, decode, no_progress):
    """Walk a dataset folder; print counts, sizes, formats and every problem (exit 1 on problems)."""
    report = prep.check_dataset(dataset, root, split=split, decode=decode, progress=not no_progress)
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


@prepare.command("list")
@_DATASET
@_ROOT
@_SPLIT
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="List file to write.")
@click.option("--labels/--no-labels", default=None,
              help="Write 'image<TAB>label' lines (default: when the dataset has labels).")
@click.option("--num", type=int, default=None, help="Keep a seeded random subset of this many images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --num subset.")
def list_cmd(dataset, root, split, out, labels, num, seed):
    """Write a list file (paths relative to ROOT) of a dataset's images."""
    from ..preflight import check_output_file

    check_output_file(out)
    try:
        count = prep.write_dataset_list(dataset, root, out, split=split, with_labels=labels, num=num,
                                        seed=seed)
    except DatasetError:
        raise
    except ValueError as err:  # --num outside 1..N
        raise click.BadParameter(str(err), param_hint="--num") from None
    click.echo(f"wrote {count} entries to {out}")


COMMANDS = [prepare]
