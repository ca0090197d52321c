"""`python -m moot ARGS`: the `moot` command, for when the script is not on PATH."""

from moot.cli import entry

entry()
