"""The `moot` command's entry point, and `python -m moot ARGS` for when the script is not on
PATH. The command's modules load here, where a Ctrl-C while they load (a second or two) or
while the arguments are read ends the command with the same one line as a Ctrl-C during the
run, not a traceback."""

import sys


def entry() -> None:
    try:
        from moot.cli import entry as run_command

        run_command()  # answers a Ctrl-C itself once its run starts; this covers the rest
    except KeyboardInterrupt:
        cli = sys.modules.get("moot.cli")
        if cli is None or not cli._interrupted.is_set():  # else the command said so already
            print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    entry()
