"""CLI commands (see mlsl_gluon.cli)."""

COMMANDS = []
