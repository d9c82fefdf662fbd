"""The `mlsl-gluon` command group: every command's help lists its options, and click refuses an
unknown option, a missing required option and a bad choice with exit status 2 and a message."""
import pytest
from click.testing import CliRunner

from mlsl_gluon import __version__
from mlsl_gluon.cli import main

# Written out by hand, not read from the commands: a renamed, dropped, added or reordered option
# fails here. Flag pairs are listed by both spellings; upper case = a positional argument.
OPTIONS = {
    ("prepare", "check"): ["--dataset", "--root", "--split", "--decode", "--no-progress"],
    ("prepare", "list"): ["--dataset", "--root", "--split", "--out", "--labels / --no-labels", "--num",
                          "--seed"],
    ("stats",): ["--source", "--data-root", "--list-file", "--out", "--grid", "--alpha", "--no-progress"],
    ("pseudo-label",): [
        "--source", "--method", "--config", "--set", "--weights", "--data-root", "--split", "--list-file",
        "--width", "--round", "--portion", "--out", "--profile", "--K", "--patch-size", "--seed",
        "--flip / --no-flip",
        "--include-si / --no-include-si", "--aggregation", "--batch-size", "--longer-side",
        "--source-stats", "--spatial-prior / --no-spatial-prior", "--eta", "--shard",
        "--combine", "--regenerate", "--colour", "--ctx", "--no-progress",
    ],
    ("train",): ["--source", "--method", "--data-root", "--weights", "--out", "--config", "--set",
                 "--profile", "--ctx", "--kvstore", "--resume", "--break-lock", "--no-progress"],
    ("evaluate",): ["--weights", "--num-classes", "--width", "--data-root", "--split", "--list-file",
                    "--flip / --no-flip", "--scales", "--ctx", "--out", "--save-predictions",
                    "--no-progress"],
    ("predict",): ["IMAGES", "--weights", "--num-classes", "--width", "--out", "--flip / --no-flip",
                   "--scales", "--ctx", "--alpha", "--label-ids", "--tile", "--tile-margin", "--no-progress"],
    ("export",): ["--weights", "--num-classes", "--width", "--format", "--out", "--input-size", "--ctx"],
    ("table",): ["--table", "--result", "--out", "--paper-tables"],
    ("demo",): ["--out", "--seed", "--preset", "--no-progress"],
}
# One required option (or argument) per command that has one; None: the command has none.
REQUIRED = {("prepare", "check"): "--dataset", ("prepare", "list"): "--dataset", ("stats",): "--source",
            ("pseudo-label",): "--round", ("train",): "--data-root", ("evaluate",): "--weights",
            ("predict",): "IMAGES", ("export",): "--weights", ("table",): "--table", ("demo",): "--out"}


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_group_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "Usage: main" in result.output or "Usage: mlsl-gluon" in result.output
    commands = result.output.split("Commands:")[1]
    listed = [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line[2] != " "]
    assert sorted(listed) == sorted({path[0] for path in OPTIONS})
    assert "--version" in result.output and "--verbose" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("path", sorted(OPTIONS), ids=" ".join)
def test_command_help_lists_its_options(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: main {' '.join(path)}" in result.output
    # The option names of the help's "Options:" section, in the order they are shown.
    shown = []
    for line in result.output.split("Options:")[1].splitlines():
        words = line.split()
        # An option starts a line indented by two; deeper lines are wrapped help text.
        if line.startswith("  --") and words[0] != "--help":
            shown.append(" ".join(words[:3]) if words[1:2] == ["/"] else words[0])
    expected = [o for o in OPTIONS[path] if o.startswith("--")]
    assert shown == expected
    for argument in (o for o in OPTIONS[path] if not o.startswith("--")):
        assert argument in result.output.splitlines()[0]


@pytest.mark.parametrize("path", sorted(OPTIONS), ids=" ".join)
def test_unknown_option_exits_2_with_a_message(path):
    result = invoke(*path, "--no-such-option")
    assert result.exit_code == 2
    assert "No such option: --no-such-option" in result.output
    assert f"Try 'main {' '.join(path)} -h' for help." in result.output


@pytest.mark.parametrize("path", sorted(REQUIRED), ids=" ".join)
def test_missing_required_option_exits_2_naming_it(path):
    result = invoke(*path)
    assert result.exit_code == 2
    name = REQUIRED[path]
    assert (f"Missing option '{name}'" in result.output if name.startswith("--")
            else f"Missing argument '{name}" in result.output), result.output


def test_bad_choice_exits_2_listing_the_choices():
    result = invoke("pseudo-label", "--round", "0", "--portion", "0.2", "--out", "o", "--method", "si")
    assert result.exit_code == 2
    assert "Invalid value for '--method'" in result.output
    assert "'cbst', 'cbst-pwl', 'sisc', 'sisc-pwl'" in result.output
    result = invoke("train", "--source", "cityscapes", "--data-root", ".", "--weights", "w", "--out", "o")
    assert result.exit_code == 2 and "Invalid value for '--source'" in result.output
