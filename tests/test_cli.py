from click.testing import CliRunner

from mlsl_gluon import __version__
from mlsl_gluon.cli import main


def test_help_lists_group():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: main" in result.output or "Usage: mlsl-gluon" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
