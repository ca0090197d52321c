"""What a run looks like in the terminal: live panels per agent, the usage and agreement tables,
the final answer; and a run's result as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moot.cli._common import console, fail
from moot.events import ResultEvent, TokenEvent, TurnEvent
from moot.result import Result, Turn, Usage, format_cost


def print_json(result: Result) -> Result:
    print(json.dumps(result.model_dump(mode="json"), indent=2))
    return result


def exit_status(result: Result) -> int:
    """1 when no agent produced any reply: nothing was debated."""
    if result.turns and all(turn.failed for turn in result.turns):
        return fail(f"every model call failed; the first error: {result.turns[0].error}", 1)
    return 0


def turn_panel(turn: Turn | None, agent: str, round: int, streamed: str) -> Panel:
    """A finished turn (green, red when it failed), or one still being written (yellow)."""
    if turn is None:
        return Panel(Text(streamed), title=f"{agent} · round {round}", border_style="yellow")
    if turn.failed:
        return Panel(Text(turn.error or "", style="red"), title=f"{agent} · round {round} · failed")
    said = "verdict" if turn.role == "critic" else "answer"  # a critic accepts or revises
    subtitle = f"{said}: {turn.answer}" if turn.answer is not None else f"no {said} found"
    # As the usage table splits them: what the model read, and what it wrote.
    subtitle += f" · {turn.usage.input_tokens} in / {turn.usage.output_tokens} out tokens"
    if turn.fusion is not None and turn.fusion.deferral_rate is not None:
        subtitle += f" · deferred {turn.fusion.deferral_rate:.0%}"
    elif turn.fusion is not None:
        shares = "/".join(str(count) for count in turn.fusion.tokens_by_model)
        subtitle += f" · tokens led by model {shares}"
    if turn.tool_calls:
        subtitle += f" · {len(turn.tool_calls)} tool calls"
    body = Text()
    for call in turn.tool_calls:
        body.append(f"tool {call.summary()}\n", style="red" if call.failed else "cyan")
    body.append(turn.text)
    return Panel(body, title=f"{agent} · round {round}", subtitle=subtitle, border_style="green")


def show_live(events: Iterable[Any], live: Live) -> Result:
    """Stream a run: replies being written stay live at the bottom; each finished turn is
    printed above them, under a rule for its round."""
    streaming: dict[tuple[str, int], str] = {}
    shown_round = 0
    result: Result | None = None

    def view() -> Group:
        return Group(
            *(turn_panel(None, agent, round, text) for (agent, round), text in streaming.items())
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
                live.console.print(turn_panel(turn, turn.agent, turn.round, ""))
            elif isinstance(event, ResultEvent):
                result = event.result
            live.update(view())
    assert result is not None
    print_summary(result)
    return result


def show_turns(result: Result) -> None:
    for turn in result.turns:
        console.print(turn_panel(turn, turn.agent, turn.round, ""))


def print_summary(result: Result) -> None:
    """Usage per round and in total, answers per round, why the run stopped, the answer."""
    table = Table(title="usage", show_edge=False)
    usage = result.usage
    columns = ["round", "calls", "input tokens", "output tokens", "total tokens", "failed"]
    cached, priced = usage.cached_calls > 0, usage.cost is not None
    columns += ["cached"] * cached + ["cost"] * priced
    for column in columns:
        table.add_column(column, justify="right")
    rounds = [(str(round), result.round_turns(round)) for round in range(1, result.rounds + 1)]
    for label, turns in [*rounds, ("total", result.turns)]:
        spent = usage if label == "total" else Usage.sum([turn.usage for turn in turns])
        cells = [spent.calls, spent.input_tokens, spent.output_tokens, spent.total_tokens]
        cells.append(sum(turn.failed for turn in turns))
        cells += [spent.cached_calls] * cached
        row = [label, *map(str, cells)] + [format_cost(spent.cost)] * priced
        table.add_row(*row, style="bold" if label == "total" else None)
    console.print(table)
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
        console.print(agreement)
    console.print(f"stopped: {result.stop_reason}")
    answer = result.answer if result.answer is not None else "(no answer won the vote)"
    shape = f"answers read as {result.answer_format}" if result.answer_format else None
    console.print(
        Panel(Text(answer, style="bold"), title="final answer", subtitle=shape, border_style="cyan")
    )
