from moot.cli import entry

entry()
