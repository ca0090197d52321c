"""The `moot` command: run debates and inspect models from the terminal."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moot.errors import MootError
from moot.result import Result, Turn

if TYPE_CHECKING:
    from moot.checkpoints import Moderation

_console = Console()
_errors = Console(stderr=True)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit status 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        _print_error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{value}'") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _option(value: str) -> tuple[str, Any]:
    key, equals, raw = value.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{value}'")
    try:
        parsed: Any = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    return key, parsed


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moot", description="Several LLMs answer a question together.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    debate = commands.add_parser(
        "debate", help="run a multi-agent debate (Du et al.) on a question"
    )
    debate.add_argument("question", help="the question to debate")
    debate.add_argument("--agents", type=_positive, default=3, help="number of agents (3)")
    debate.add_argument(
        "--rounds", type=_positive, default=2, help="rounds, the first included (2)"
    )
    debate.add_argument(
        "--model", default="local", help="model spec: local, llama:PATH, openai:MODEL"
    )
    debate.add_argument(
        "-o",
        "--model-option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option for the model backend, e.g. -o n_ctx=8192 -o n_gpu_layers=-1",
    )
    debate.add_argument(
        "--extract",
        choices=["number", "boxed", "choice", "square", "text"],
        default="number",
        help="answer format to ask for and vote on (number)",
    )
    debate.add_argument("--temperature", type=float, help="sampling temperature for every agent")
    debate.add_argument("--max-tokens", type=_positive, help="most tokens per reply")
    debate.add_argument("--max-concurrency", type=_positive, help="most calls in flight at once")
    debate.add_argument(
        "--consensus",
        type=float,
        help="stop early once this share of agents agree, e.g. 1.0 (all)",
    )
    debate.add_argument("--json", action="store_true", help="print the result as one JSON object")

    run = commands.add_parser("run", help="run a society file on a question")
    run.add_argument("society", help="a society file (YAML), e.g. examples/societies/debate.yaml")
    run.add_argument("question", help="the question for the society")
    run.add_argument("--model", help="model spec that replaces every agent's model")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")

    for command in (debate, run):
        _durable_options(command)
    resume = commands.add_parser("resume", help="finish a checkpointed run that was stopped")
    resume.add_argument("--checkpoint", required=True, metavar="FILE.sqlite")
    resume.add_argument("--thread", required=True, metavar="ID")
    resume.add_argument("--moderate", action="store_true", help="ask a moderator between rounds")
    resume.add_argument("--json", action="store_true", help="print the result as one JSON object")

    serve = commands.add_parser("serve", help="serve society files as an OpenAI-compatible API")
    serve.add_argument("societies", nargs="+", metavar="SOCIETY_FILE", help="named by file stem")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_positive, default=8000, help="port (8000)")
    serve.add_argument("--model", help="model spec that replaces every agent's model")

    _bench_options(commands.add_parser("bench", help="compare methods on a dataset"))
    commands.add_parser("models", help="list the embedded model and the model backends")
    return parser


def _bench_options(bench: argparse.ArgumentParser) -> None:
    data = bench.add_argument_group("data")
    data.add_argument("--data", help="a JSONL file, or 'arithmetic' (Du et al., from a seed)")
    data.add_argument("--limit", type=_positive, help="first N questions (arithmetic: 50)")
    data.add_argument("--range", default="0-30", help="arithmetic: integer range LOW-HIGH (0-30)")
    data.add_argument("--data-seed", type=int, default=0, help="arithmetic: generator seed (0)")
    data.add_argument("--question-field", default="question", help="JSONL field of the question")
    data.add_argument("--answer-field", default="answer", help="JSONL field of the answer")
    data.add_argument(
        "--extract", help="number, boxed, choice, square, text, or MODULE:FUNCTION(reply)"
    )
    data.add_argument("--check", help="MODULE:FUNCTION(answer, question) -> bool")
    methods = bench.add_argument_group("methods")
    methods.add_argument(
        "--methods",
        default="single,vote-3,debate-3x2",
        help="comma-separated: single, vote-N, debate-NxR, machinesom-STRATEGY, moa-NxL, "
        "cascade-N, FILE.yaml (single,vote-3,debate-3x2)",
    )
    methods.add_argument("--model", help="model spec for every agent (local)")
    methods.add_argument("--strong-model", help="the cascade's last tier (--model)")
    methods.add_argument(
        "-o", "--model-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help="option for the model backend, e.g. -o n_ctx=8192",
    )  # fmt: skip
    methods.add_argument("--temperature", type=float, default=0.7, help="sampling (0.7)")
    methods.add_argument("--max-tokens", type=_positive, default=384, help="per reply (384)")
    methods.add_argument("--trials", type=_positive, default=1, help="repeats over seeds (1)")
    methods.add_argument("--seed", type=int, default=0, help="base seed of the agents (0)")
    runs = bench.add_argument_group("running")
    runs.add_argument("--out", default="bench-out", help="results and report folder (bench-out)")
    runs.add_argument("--concurrency", type=_positive, default=2, help="questions in flight (2)")
    runs.add_argument("--backend", choices=["local", "ray"], default="local")
    runs.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    runs.add_argument("--workers", type=_positive, default=2, help="Ray worker actors (2)")
    runs.add_argument(
        "--report-only", action="store_true", help="write the report from OUT's results only"
    )


def _durable_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--checkpoint", metavar="FILE.sqlite", help="save every finished turn (see `moot resume`)"
    )
    command.add_argument("--thread", metavar="ID", help="the run's name in the checkpoint file")
    command.add_argument(
        "--moderate", action="store_true", help="pause between rounds for a note or a stop"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command in ("debate", "run"):
            return _start(args)
        if args.command == "resume":
            return _resume(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "bench":
            return _bench(args)
        return _models()
    except MootError as error:
        return _fail(str(error))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return _fail(f"{where}: {first['msg']}")
    except KeyboardInterrupt:
        return _fail("interrupted", status=130)


def _bench(args: argparse.Namespace) -> int:
    """`moot bench`: run what is not done yet, then write the report and plots."""
    from moot.bench import (
        BenchPlan,
        MethodSettings,
        ResultStore,
        run_bench,
        summarise,
        write_report,
    )
    from moot.bench.tasks import arithmetic, load_jsonl

    out = Path(args.out)
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    if args.report_only:
        records = ResultStore(out).records()
        if not records:
            raise MootError(f"no results in {out / 'results.jsonl'}: run `moot bench` first")
    else:
        if not args.data:
            raise MootError("say what to run on: --data FILE.jsonl or --data arithmetic")
        if args.data == "arithmetic":
            low, _, high = args.range.partition("-")
            if not (low.isdigit() and high.isdigit() and int(low) <= int(high)):
                raise MootError(f"--range must be LOW-HIGH like 0-30, got '{args.range}'")
            task = arithmetic(args.limit or 50, args.data_seed, int(low), int(high))
        else:
            task = load_jsonl(
                args.data,
                question_field=args.question_field,
                answer_field=args.answer_field,
                extract=_extractor(args.extract),
                check=_callable(args.check, "--check") if args.check else None,
            ).head(args.limit)
        settings = MethodSettings(
            model=args.model or "local",
            strong_model=args.strong_model,
            override=args.model is not None,
            model_options=dict(args.model_option),
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
        plan = BenchPlan(task=task, methods=methods, settings=settings, trials=args.trials)
        started = time.perf_counter()
        records = run_bench(
            plan,
            out,
            concurrency=args.concurrency,
            backend=args.backend,
            address=args.address,
            workers=args.workers,
            console=_errors,
        )
        _console.print(f"wall time {time.perf_counter() - started:.1f} s ({args.backend} backend)")
    report = write_report(records, out, None if args.report_only else methods)
    for name in dict.fromkeys(summary.task for summary in summarise(records)):
        table = Table("method", "questions", "accuracy [95% CI]", "tokens/q", "calls/q", "s/q")
        table.title = name
        for summary in sorted(summarise(records), key=lambda s: s.tokens):
            if summary.task == name:
                table.add_row(
                    summary.method,
                    f"{summary.questions} x {summary.trials}",
                    str(summary.accuracy),
                    f"{summary.tokens:,.0f}",
                    f"{summary.calls:.1f}",
                    f"{summary.seconds:.1f}",
                )
        _console.print(table)
    _console.print(f"report: {report}", soft_wrap=True)
    return 0


def _extractor(spec: str | None) -> Any:
    if spec is None or spec in ("number", "boxed", "choice", "square", "text"):
        return spec
    return _callable(spec, "--extract")


def _callable(spec: str, option: str) -> Any:
    """MODULE:FUNCTION, imported."""
    import pkgutil

    try:
        found = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as error:
        raise MootError(
            f"{option} {spec}: cannot import it ({error}); use MODULE:FUNCTION"
        ) from None
    if not callable(found):
        raise MootError(f"{option} {spec}: not a function")
    return found


def _print_error(message: str) -> None:
    """One line on stderr; the message is plain text (not rich markup), never wrapped."""
    _errors.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def _fail(message: str, status: int = 2) -> int:
    _print_error(message)
    return status


_SOCIETY_KEYS = (
    "command", "agents", "rounds", "model", "model_option", "extract", "temperature",
    "max_tokens", "max_concurrency", "consensus", "society",
)  # fmt: skip


def _society(spec: dict[str, Any]) -> Any:
    """The society a `debate` or `run` command describes (also rebuilt by `resume`)."""
    from moot import Agent, Debate, MajorityVote, Society, load_model
    from moot.society_file import load_society

    if spec["command"] == "run":
        model = load_model(spec["model"]) if spec.get("model") else None
        return load_society(spec["society"], model=model)
    model = load_model(spec["model"], **dict(spec["model_option"]))
    agents = [
        Agent(
            name=f"agent{index + 1}",
            model=model,
            temperature=spec["temperature"],
            max_tokens=spec["max_tokens"],
        )
        for index in range(spec["agents"])
    ]
    return Society(
        agents=agents,
        protocol=Debate(rounds=spec["rounds"], consensus=spec["consensus"]),
        aggregator=MajorityVote(extract=spec["extract"]),
        max_concurrency=spec["max_concurrency"],
    )


def _start(args: argparse.Namespace) -> int:
    """`moot debate` and `moot run`: build the society, remember it for `resume`, run it."""
    spec = {key: getattr(args, key) for key in _SOCIETY_KEYS if hasattr(args, key)}
    if args.command == "run":
        spec["society"] = str(Path(args.society).resolve())
    society = _society(spec)
    if args.checkpoint:
        if not args.thread:
            return _fail("--checkpoint needs --thread ID to name the run (and to resume it)")
        _remember(args.checkpoint, args.thread, spec)
    live = Live(console=_console, refresh_per_second=8, transient=True)
    options = _run_options(args, live)
    if args.json:
        return _status(_print_json(society.run(args.question, **options)))
    return _status(_show_live(society.stream(args.question, **options), live))


def _resume(args: argparse.Namespace) -> int:
    spec = _recall(args.checkpoint, args.thread)
    result = _society(spec).resume(**_run_options(args, None))
    if args.json:
        return _status(_print_json(result))
    for turn in result.turns:
        _console.print(_turn_panel(turn, turn.agent, turn.round, ""))
    _print_summary(result)
    return _status(result)


def _run_options(args: argparse.Namespace, live: Live | None) -> dict[str, Any]:
    options: dict[str, Any] = {"checkpoint": args.checkpoint, "thread_id": args.thread}
    if args.moderate:
        options["moderator"] = lambda round, turns: _ask_moderator(round, turns, live)
    return options


def _ask_moderator(round: int, turns: list[Turn], live: Live | None) -> Moderation | None:
    """Between rounds: Enter goes on, text is passed to the agents, 'stop' ends the debate.
    The live view is paused meanwhile, so it does not draw over the prompt."""
    from moot.checkpoints import Moderation

    if live is not None:
        live.stop()
    answers = ", ".join(f"{turn.agent}: {turn.answer}" for turn in turns)
    _console.print(f"[bold]moderator[/] after round {round} ({answers})")
    try:
        said = _console.input("note for the agents (Enter: go on, 'stop': end) > ").strip()
    except EOFError:
        said = ""
    if live is not None:
        live.start()
    if said.lower() == "stop":
        return Moderation(stop=True)
    return Moderation(note=said) if said else None


def _remember(database: str, thread: str, spec: dict[str, Any]) -> None:
    """Keep how to rebuild the society beside LangGraph's checkpoints, for `moot resume`."""
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS moot_runs (thread TEXT PRIMARY KEY, spec TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT OR REPLACE INTO moot_runs VALUES (?, ?)", (thread, json.dumps(spec))
        )


def _recall(database: str, thread: str) -> dict[str, Any]:
    if not Path(database).is_file():
        raise MootError(f"no checkpoint file {database}: give the --checkpoint of the first run")
    with sqlite3.connect(database) as connection:
        try:
            row = connection.execute(
                "SELECT spec FROM moot_runs WHERE thread = ?", (thread,)
            ).fetchone()
        except sqlite3.OperationalError:
            row = None
    if row is None:
        raise MootError(
            f"{database} holds no run '{thread}' started by `moot debate` or `moot run`"
        )
    spec: dict[str, Any] = json.loads(row[0])
    return spec


def _serve(args: argparse.Namespace) -> int:
    from moot.integrations.serve import serve
    from moot.models import load_model
    from moot.society_file import load_society

    model = load_model(args.model) if args.model else None
    societies = {}
    for path in args.societies:
        name = Path(path).stem
        if name in societies:
            return _fail(f"two society files are named '{name}': served names come from file stems")
        societies[name] = load_society(path, model=model)
    _console.print(f"serving {', '.join(societies)} on http://{args.host}:{args.port}/v1")
    serve(societies, args.host, args.port)
    return 0


def _print_json(result: Result) -> Result:
    print(json.dumps(result.model_dump(mode="json"), indent=2))
    return result


def _status(result: Result) -> int:
    """1 when no agent produced any reply: nothing was debated."""
    if result.turns and all(turn.failed for turn in result.turns):
        return _fail(f"every model call failed; the first error: {result.turns[0].error}", 1)
    return 0


def _turn_panel(turn: Turn | None, agent: str, round: int, streamed: str) -> Panel:
    if turn is None:
        return Panel(Text(streamed), title=f"{agent} · round {round}", border_style="yellow")
    if turn.failed:
        return Panel(Text(turn.error or "", style="red"), title=f"{agent} · round {round} · failed")
    subtitle = f"answer: {turn.answer}" if turn.answer is not None else "no answer found"
    return Panel(
        Text(turn.text),
        title=f"{agent} · round {round}",
        subtitle=f"{subtitle} · {turn.usage.total_tokens} tokens",
        border_style="green",
    )


def _show_live(events: Iterable[Any], live: Live) -> Result:
    """Stream a run: replies being written stay live at the bottom; each finished turn is
    printed above them, under a rule for its round."""
    from moot.society import ResultEvent, TokenEvent, TurnEvent

    streaming: dict[tuple[str, int], str] = {}
    shown_round = 0
    result: Result | None = None

    def view() -> Group:
        return Group(
            *(_turn_panel(None, agent, round, text) for (agent, round), text in streaming.items())
        )

    live.update(view())
    with live:
        for event in events:
            if isinstance(event, TokenEvent):
                key = (event.agent, event.round)
                streaming[key] = streaming.get(key, "") + event.text
            elif isinstance(event, TurnEvent):
                turn = event.turn
                streaming.pop((turn.agent, turn.round), None)
                if turn.round != shown_round:
                    shown_round = turn.round
                    live.console.rule(f"round {turn.round}")
                live.console.print(_turn_panel(turn, turn.agent, turn.round, ""))
            elif isinstance(event, ResultEvent):
                result = event.result
            live.update(view())
    assert result is not None
    _print_summary(result)
    return result


def _print_summary(result: Result) -> None:
    table = Table(title="usage", show_edge=False)
    for column in ("round", "calls", "input tokens", "output tokens", "total tokens", "failed"):
        table.add_column(column, justify="right")
    for round in range(1, result.rounds + 1):
        turns = result.round_turns(round)
        calls = sum(turn.usage.calls for turn in turns)
        inputs = sum(turn.usage.input_tokens for turn in turns)
        outputs = sum(turn.usage.output_tokens for turn in turns)
        failed = sum(turn.failed for turn in turns)
        table.add_row(
            str(round), str(calls), str(inputs), str(outputs), str(inputs + outputs), str(failed)
        )
    usage = result.usage
    table.add_row(
        "total",
        str(usage.calls),
        str(usage.input_tokens),
        str(usage.output_tokens),
        str(usage.total_tokens),
        str(sum(turn.failed for turn in result.turns)),
        style="bold",
    )
    _console.print(table)
    if result.conformity:
        agreement = Table(title="answers per round", show_edge=False)
        for column in ("round", "answers", "changed", "agreement"):
            agreement.add_column(column)
        for stats in result.conformity:
            answers = ", ".join(f"{answer} x{count}" for answer, count in stats.answers.items())
            agreement.add_row(
                str(stats.round),
                answers or "-",
                ", ".join(stats.changed) or "-",
                f"{stats.agreement:.0%}",
            )
        _console.print(agreement)
    _console.print(f"stopped: {result.stop_reason}")
    answer = result.answer if result.answer is not None else "(no answer won the vote)"
    _console.print(Panel(Text(answer, style="bold"), title="final answer", border_style="cyan"))


def _models() -> int:
    from moot.models import backends
    from moot.models.embedded import EMBEDDED_FILE, embedded_model_path

    table = Table(title="model specs", show_edge=False)
    table.add_column("spec")
    table.add_column("what")
    try:
        where = str(embedded_model_path())
    except MootError as error:
        where = f"not installed: {error}"
    table.add_row("local", f"embedded {EMBEDDED_FILE} (offline) at {where}")
    for prefix, usage in backends().items():
        spec, _, what = usage.partition("  ")
        table.add_row(spec or prefix, what.strip())
    table.add_row("(object)", "any langchain_core BaseChatModel, from Python")
    _console.print(table)
    _console.print("Pass backend options with -o KEY=VALUE, e.g. -o n_ctx=8192 -o n_gpu_layers=-1.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
