"""`python -m moot.cli ARGS`: the same as `python -m moot ARGS`."""

from moot.__main__ import entry

entry()
