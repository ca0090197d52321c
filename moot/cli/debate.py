"""`moot debate`, `moot run` and `moot resume`: run a society on a question, live or as JSON.

A checkpointed run stores its society's spec beside its checkpoints (`moot.cli.run`), so
`moot resume` rebuilds the same society.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from rich.live import Live

from moot.cache import CallCache, repeats
from moot.checkpoints import (
    Moderation,
    held_run,
    open_saver,
    recall_run,
    remember_run,
    thread_taken,
)
from moot.cli._common import (
    add_cache_option,
    add_model_options,
    add_tool_options,
    console,
    count,
    errors,
    extract_choices,
    fail,
    finite,
    positive,
    seconds,
)
from moot.cli.display import exit_status, print_json, print_summary, show_live, show_turns
from moot.cli.run import SETTINGS, add_society_flags, command_society, recalled, stored
from moot.errors import ConfigError
from moot.graphs.debate import PromptSet, answer_format_of
from moot.presets import DEFAULT_AGENTS, DEFAULT_ROUNDS, default_society_flags
from moot.result import Result, Turn
from moot.society import Society


def add_commands(commands: Any) -> None:
    debate = commands.add_parser(
        "debate",
        help="run a multi-agent debate (Du et al.) on a question",
        description="Run a society on a question: by default 3 text agents debating 2 rounds and "
        "their vote. A question whose answer is a number (asked in moot's prompts) gets 3 text "
        "and 3 program agents answering once, two at a time until two agree (--stop-early), "
        "and their vote instead, and a multiple-choice "
        "question the vote of 3 text agents' first answers, unless a flag that shapes "
        "a debate is given (--rounds, --programs, --decide, --consensus, --update, "
        "--anonymous, --peers-shown, --moderate): BENCHMARKS.md, issue 38.",
    )
    debate.add_argument("question", help="the question to debate")
    debate.add_argument(
        "--agents",
        type=positive,
        default=DEFAULT_AGENTS,
        help=f"number of text agents ({DEFAULT_AGENTS})",
    )
    debate.add_argument(
        "--rounds",
        type=positive,
        help=f"rounds, the first included ({DEFAULT_ROUNDS}; 1 for the default society of a "
        "question whose answer is a number or a choice)",
    )
    debate.add_argument(
        "--model",
        default="local",
        help="model spec: local, llama:PATH, hf:OWNER/REPO/FILE.gguf, openai:MODEL, "
        "fuse:MODEL+MODEL[?key=value&...], test",
    )
    add_model_options(debate)
    debate.add_argument(
        "--extract",
        choices=extract_choices(),
        help="answer format to ask for and vote on (auto: chosen per question; with a paper's "
        "--prompts, the paper's)",
    )
    debate.add_argument("--temperature", type=finite, help="sampling temperature for every agent")
    debate.add_argument("--max-tokens", type=positive, help="most tokens per reply")
    debate.add_argument(
        "--seed",
        type=count,
        help="seed agent N with SEED+N-1: the run repeats, and --cache can answer it again",
    )
    debate.add_argument("--max-concurrency", type=positive, help="most calls in flight at once")
    add_tool_options(debate, "the text agents")
    debate.add_argument(
        "--consensus",
        type=finite,
        help="stop early once this share of agents agree, e.g. 1.0 (all)",
    )
    add_society_flags(debate)
    debate.add_argument(
        "--prompts",
        choices=get_args(PromptSet),
        default="moot",
        help="moot's prompts (any question), or Du et al.'s (du-*) or MachineSoM's (som-*) for "
        "one of their tasks, word for word; du-gsm8k debates math word problems better (moot)",
    )
    debate.add_argument("--json", action="store_true", help="print the result as one JSON object")

    run = commands.add_parser("run", help="run a society file on a question")
    run.add_argument("society", help="a society file (YAML), e.g. examples/societies/debate.yaml")
    run.add_argument("question", help="the question for the society")
    run.add_argument("--model", help="model spec that replaces every agent's model")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")

    for command in (debate, run):
        command.add_argument(
            "--timeout", type=seconds, help="seconds one model call may take (none)"
        )
        command.add_argument(
            "--retries", type=count, help="repeats of a call that failed for a passing reason (2)"
        )
        command.add_argument(
            "--checkpoint",
            metavar="FILE.sqlite|postgresql://...",
            help="save every finished turn (`moot resume`)",
        )
        command.add_argument("--thread", metavar="ID", help="the run's name in the checkpoint")
        command.add_argument(
            "--moderate", action="store_true", help="pause between rounds for a note or a stop"
        )
        command.add_argument(
            "--fresh", action="store_true", help="start the thread over if it holds a run"
        )
        command.set_defaults(handler=start)

    resume = commands.add_parser("resume", help="finish a checkpointed run that was stopped")
    resume.add_argument("--checkpoint", required=True, metavar="FILE.sqlite|postgresql://...")
    resume.add_argument("--thread", required=True, metavar="ID")
    resume.add_argument("--moderate", action="store_true", help="ask a moderator between rounds")
    resume.add_argument("--json", action="store_true", help="print the result as one JSON object")
    resume.set_defaults(handler=resume_run)

    for command in (debate, run, resume):
        command.add_argument(
            "--html", metavar="FILE.html", help="write the run as a web page (`moot show`)"
        )
        add_cache_option(command)
        command.add_argument(
            "--cache-unseeded",
            action="store_true",
            help="with --cache: cache unseeded calls at temperature > 0 too",
        )


def society_of(settings: Mapping[str, Any]) -> Society:
    """The society a `debate` or `run` command's settings describe."""
    return command_society(settings)[1]


def start(args: argparse.Namespace) -> int:
    """`moot debate` and `moot run`: build the society, remember its spec for `resume`, run it."""
    settings = {key: getattr(args, key) for key in SETTINGS if hasattr(args, key)}
    note = None
    if args.command == "debate":
        if args.moderate and args.stop_early:
            return fail("--moderate pauses between debate rounds, and --stop-early has none")
        if settings.get("extract") is None:
            settings["extract"] = answer_format_of(settings.get("prompts") or "moot")
        shaping = {**settings, "moderate": args.moderate}
        chosen = default_society_flags(shaping, args.question)
        voted = chosen["rounds"] == 1 and (settings.get("rounds") is None or args.stop_early)
        by_default = voted and not settings.get("stop_early")
        settings.update(chosen)
        note = _voted_note(settings, by_default) if voted and not args.json else None
    spec, society = command_society(settings)
    if args.moderate and not society.protocol.takes_moderator():  # before a thread is taken
        return fail(
            f"--moderate pauses between rounds, and this society's "
            f"{type(society.protocol).__name__} has none: leave out --moderate"
        )
    live = Live(console=console, refresh_per_second=8, transient=True)
    options = {
        **_run_options(args, live, society),
        "fresh": args.fresh,
    }  # checked before it is recorded
    if args.checkpoint:
        if not args.thread:
            return fail("--checkpoint needs --thread ID to name the run (and to resume it)")
        _check_thread_is_free(args)
        remember_run(args.checkpoint, args.thread, stored(spec))
    if note:  # (once the settings are known to be good)
        console.print(f"[dim]{note}[/dim]")
    if args.json:
        result = print_json(society.run(args.question, **options))
    else:
        result = show_live(society.stream(args.question, **options), live)
    page = _write_page(result, args.html)
    return exit_status(result) or page


def _voted_note(settings: Mapping[str, Any], by_default: bool) -> str:
    """What a question got that answers once (and why, when the default chose it)."""
    agents = f"{settings.get('agents') or DEFAULT_AGENTS} text agents"
    if settings["programs"]:
        agents += f" and {settings['programs']} program agents"
    how = "answer once and vote"
    if settings.get("stop_early"):
        how = "answer two at a time until two agree, and vote over every answer given"
    if not by_default:
        return f"{agents} {how}"
    return (
        f"{agents} {how}: moot's default for a number or a choice, where no debate measured "
        f"beat it (BENCHMARKS.md, issue 38); --rounds {DEFAULT_ROUNDS} debates"
    )


def _write_page(result: Result, html: str | None) -> int:
    """Write the run's web page to `html` when asked, after its output is printed: a page that
    cannot be written loses nothing, the error says why (exit status 2)."""
    if not html:
        return 0
    from moot.cli.show import write_page
    from moot.viewer import run_html

    try:
        write_page(html, run_html(result))
    except ConfigError as error:
        return fail(f"{error} (the run finished and is printed above)")
    return 0


def _check_thread_is_free(args: argparse.Namespace) -> None:
    """Refuse a thread that holds a run before its stored society is replaced (unless --fresh:
    the run itself then clears the thread)."""
    saver, connection = open_saver(args.checkpoint)
    try:
        held = held_run(saver, args.thread)
    finally:
        connection.close()
    if held is not None and not args.fresh:
        raise thread_taken(args.thread, held, args.checkpoint)


def resume_run(args: argparse.Namespace) -> int:
    society = recalled(recall_run(args.checkpoint, args.thread))
    result = society.resume(**_run_options(args, None, society))
    if args.json:
        print_json(result)
    else:
        show_turns(result)
        print_summary(result)
    page = _write_page(result, args.html)
    return exit_status(result) or page


def _say_if_never_cached(society: Society) -> None:
    """A cache that can never answer is a silent no-op: say so once, before the run."""
    never = [
        agent.name for agent in society.agents if not repeats(agent.chat_model(), agent.sampling())
    ]
    if never:
        shown = ", ".join(never[:3]) + (f" and {len(never) - 3} more" if len(never) > 3 else "")
        errors.print(
            f"note: --cache stores no call of {shown}: unseeded calls at temperature > 0 differ "
            "every time. Add --seed N (moot debate; `seed:` in a society file), or "
            "--cache-unseeded to replay them anyway",
            soft_wrap=True,
            markup=False,
        )


def _run_options(args: argparse.Namespace, live: Live | None, society: Society) -> dict[str, Any]:
    options: dict[str, Any] = {"checkpoint": args.checkpoint, "thread_id": args.thread}
    if args.html and not Path(args.html).parent.is_dir():  # say so before the run, not after
        raise ConfigError(
            f"cannot write {args.html}: the folder {Path(args.html).parent} does not exist"
        )
    if args.html and Path(args.html).is_dir():
        raise ConfigError(f"cannot write {args.html}: it is a folder; give a file name")
    if args.cache:
        options["cache"] = CallCache(args.cache, unseeded=args.cache_unseeded)
        if not args.cache_unseeded:
            _say_if_never_cached(society)
    elif args.cache_unseeded:
        raise ConfigError("--cache-unseeded needs --cache FILE.sqlite")
    if args.moderate:
        options["moderator"] = lambda round, turns: _ask_moderator(round, turns, live)
    return options


def _ask_moderator(round: int, turns: list[Turn], live: Live | None) -> Moderation | None:
    """Between rounds: Enter goes on, text is passed to the agents, 'stop' ends the debate.
    The live view is paused meanwhile, so it does not draw over the prompt."""
    if live is not None:
        live.stop()
    answers = ", ".join(f"{turn.agent}: {turn.answer}" for turn in turns)
    console.print(f"[bold]moderator[/] after round {round} ({answers})")
    try:
        said = console.input("note for the agents (Enter: go on, 'stop': end) > ").strip()
    except EOFError:
        said = ""
    if live is not None:
        live.start()
    if said.lower() == "stop":
        return Moderation(stop=True)
    return Moderation(note=said) if said else None
