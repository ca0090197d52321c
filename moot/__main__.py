"""The `moot` command's entry point, and `python -m moot ARGS` for when the script is not on
PATH. The command's modules load here, where a Ctrl-C while they load (a second or two) ends
the command with the same one line as a Ctrl-C later on, not a traceback."""

import sys


def entry() -> None:
    try:
        from moot.cli import entry as run_command
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    run_command()


if __name__ == "__main__":
    entry()
