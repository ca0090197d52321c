"""`python -m moot.cli ARGS`: the same as `python -m moot ARGS`, except that a Ctrl-C while
the command's modules load (Python loads this package before this file runs) is a traceback."""

from moot.__main__ import entry

entry()
