"""Transcripts of runs and benchmarks: Markdown for papers and issues, one self-contained HTML
page to look at (inline CSS, no script, no network), or JSON; and the live page of a run that
`moot serve` is running (the same grid, filled by a small script from the run's events).

A record is a run's `--json` output, a checkpointed run (file and thread), or a `moot bench`
results folder. The HTML page of a run is a grid of rounds x agents: each cell shows the answer
and opens to the reply; answers that changed since the agent's previous round are highlighted,
failed turns are red, each round ends with its vote, and a chart shows agreement per round.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from moot.bench.records import BenchRecord
from moot.errors import ConfigError
from moot.result import Result, RoundStats, Turn, Usage, format_cost, result_of_state

if TYPE_CHECKING:
    from moot.society import Society

Format = Literal["md", "html", "json"]
Record = Result | list[BenchRecord]


def load_record(
    path: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    thread: str | None = None,
) -> Record:
    """A run from its `--json` file or from a checkpoint, or a bench folder's records."""
    if checkpoint is not None:
        if thread is None:
            raise ConfigError("a checkpointed run is named by its thread: add --thread ID")
        return _checkpointed(checkpoint, thread)
    if path is None:
        raise ConfigError("say what to show: a --json file, a bench folder, or --checkpoint FILE")
    path = Path(path)
    if path.is_dir():
        from moot.bench.store import ResultStore

        records = ResultStore(path).records_with_transcripts()
        if not records:
            raise ConfigError(f"{path} holds no benchmark results (results.jsonl)")
        return records
    if not path.is_file():
        raise ConfigError(f"no file or folder {path}")
    try:
        return Result.model_validate_json(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except (ValidationError, ValueError) as error:
        hint = "; a checkpoint file? use --checkpoint FILE --thread ID" * (
            path.suffix in (".sqlite", ".db")
        )
        why = str(error)
        if isinstance(error, ValidationError):
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"]))
            why = f"{where}: {first['msg']}" if where else first["msg"]
        raise ConfigError(
            f"{path} is not a run record (the output of `moot debate ... --json`): {why}{hint}"
        ) from None


def _checkpointed(checkpoint: str | Path, thread: str) -> Result:
    from moot.checkpoints import held_run, is_postgres, open_saver, shown

    if not is_postgres(checkpoint) and not Path(checkpoint).is_file():
        raise ConfigError(f"no checkpoint file {checkpoint}")
    saver, connection = open_saver(checkpoint)
    try:
        values = held_run(saver, thread)
    finally:
        connection.close()
    if values is None:
        raise ConfigError(f"thread '{thread}' in {shown(checkpoint)} holds no run")
    society = _stored_society(checkpoint, thread)
    if society is not None:  # read as the run reads it (a cascade's tiers, its answer format)
        return society.result_of_state(values)
    agents = list(dict.fromkeys(turn.agent for turn in values.get("turns", [])))
    participants = [turn.agent for turn in values.get("turns", []) if turn.round == 1]
    return result_of_state(values, agents, participants)


def _stored_society(checkpoint: str | Path, thread: str) -> Society | None:
    """The society `moot debate` or `moot run` stored beside the thread, on the scripted test
    model and without tools: reading a run loads no model, calls no API and imports no tool.
    None for a run started from Python, or stored settings that no longer build."""
    from moot.checkpoints import recall_run
    from moot.society import Society
    from moot.spec import SocietySpec, society_fields, with_model

    try:
        stored = recall_run(checkpoint, thread).get("spec")
        if not isinstance(stored, dict):
            return None
        spec = SocietySpec.model_validate(_without_tools(stored))
        return Society(**society_fields(with_model(spec, "test")))
    except Exception:  # noqa: BLE001 (best effort: the run is read without it)
        return None


def _without_tools(data: object) -> object:
    """A stored spec without its agents' tools (a tool named "module:attr" is imported)."""
    if isinstance(data, dict):
        return {k: _without_tools(v) for k, v in data.items() if k not in ("tools", "tool_choice")}
    if isinstance(data, list):
        return [_without_tools(item) for item in data]
    return data


def render(record: Record, format: Format) -> str:
    """The record as Markdown, an HTML page, or JSON."""
    if isinstance(record, Result):
        if format == "json":
            return json.dumps(record.model_dump(mode="json"), indent=2)
        return run_html(record) if format == "html" else run_markdown(record)
    if format == "json":
        return json.dumps([r.model_dump(mode="json") for r in record], indent=2)
    return bench_html(record) if format == "html" else bench_markdown(record)


# -- a run ---------------------------------------------------------------------------------------


def _agents(result: Result) -> list[str]:
    return list(dict.fromkeys(turn.agent for turn in result.turns))


def _changed(result: Result) -> set[tuple[str, int]]:
    """(agent, round) of answers that differ from the agent's answer the round before."""
    return {(agent, stats.round) for stats in result.conformity for agent in stats.changed}


def _usage_line(usage: Usage) -> str:
    parts = [
        f"{usage.total_tokens:,} tokens ({usage.input_tokens:,} in, {usage.output_tokens:,} out)",
        f"{usage.calls} calls",
    ]
    if usage.cached_calls:
        parts.append(f"{usage.cached_calls} cached")
    if usage.cost is not None:
        parts.append(f"cost {format_cost(usage.cost)}")
    return ", ".join(parts)


def run_markdown(result: Result) -> str:
    """The run as Markdown: the answer, then per round a table of the agents' answers and
    their replies as quotes."""
    changed = _changed(result)
    lines = [
        f"# {_one_line(result.question)}",
        "",
        f"**Final answer: {result.answer if result.answer is not None else '(none)'}** "
        f"(stopped: {result.stop_reason}; {result.rounds} rounds; {_usage_line(result.usage)})",
    ]
    stats = {s.round: s for s in result.conformity}
    for round, turns in _by_round(result).items():
        lines += ["", f"## Round {round}", ""]
        lines += [
            "| agent | role | answer | tokens | confidence | saw |",
            "|---|---|---|---:|---:|---|",
        ]
        for turn in turns:
            answer = "**failed**" if turn.failed else _cell(turn.answer or "-")
            if (turn.agent, round) in changed:
                answer += " (changed)"
            confidence = f"{turn.confidence:.2f}" if turn.confidence is not None else "-"
            lines.append(
                f"| {turn.agent} | {turn.role} | {answer} | {turn.usage.total_tokens} | "
                f"{confidence} | {', '.join(turn.peers) or '-'} |"
            )
        if round in stats:
            votes = ", ".join(f"{a} x{n}" for a, n in stats[round].answers.items()) or "-"
            lines += ["", f"Vote: {votes}; agreement {stats[round].agreement:.0%}."]
        for turn in turns:
            said = turn.error if turn.failed else turn.text
            quoted = "\n".join(f"> {line}" for line in (said or "").splitlines()) or ">"
            lines += ["", f"**{turn.agent}**{' (failed)' if turn.failed else ''}:", ""]
            lines += [f"- tool `{_one_line(call.summary())}`" for call in turn.tool_calls]
            lines += [""] * bool(turn.tool_calls) + [quoted]
    return "\n".join(lines) + "\n"


def _by_round(result: Result) -> dict[int, list[Turn]]:
    """The turns of each round that has any, in order (a record's own `rounds` count is not
    trusted: a damaged or hostile file may claim a billion)."""
    rounds: dict[int, list[Turn]] = {}
    for turn in sorted(result.turns, key=lambda turn: turn.round):
        rounds.setdefault(turn.round, []).append(turn)
    return rounds


def run_html(result: Result) -> str:
    """The run as one self-contained HTML page."""
    return _page(f"moot: {_one_line(result.question)[:80]}", run_body(result))


def run_body(result: Result) -> str:
    """The page of a run without its head: what the live page becomes when the run ends."""
    agents, changed = _agents(result), _changed(result)
    stats = {s.round: s for s in result.conformity}
    head = "".join(f"<th>{_e(agent)}</th>" for agent in agents)
    rows = []
    for round, turns in _by_round(result).items():
        by_agent = {turn.agent: turn for turn in turns}
        cells = [turn_cell(by_agent.get(agent), (agent, round) in changed) for agent in agents]
        rows.append(
            f"<tr data-round='{round}'><th>round {round}</th>{''.join(cells)}"
            f"{vote_cell(stats.get(round))}</tr>"
        )
    answer = result.answer if result.answer is not None else "(no answer won)"
    return f"""<h1>moot run</h1>
<div class="question">{_e(result.question)}</div>
<div class="final" id="final-answer">final answer: <b>{_e(answer)}</b></div>
<div class="meta" id="status">stopped: {_e(result.stop_reason)} · {result.rounds} rounds ·
{_e(_usage_line(result.usage))}</div>
<h2>Rounds × agents</h2>
<table id="grid"><tr><th></th>{head}<th>vote</th></tr>
{"".join(rows)}</table>
<div class="small">{_LEGEND}</div>
<h2>Agreement per round</h2>
{_agreement_chart([(s.round, s.agreement) for s in result.conformity])}"""


_LEGEND = """Click a cell for the reply. Yellow: the answer changed since the agent's
previous round. Red: the call failed."""


def live_html(question: str, agents: list[str], events: str) -> str:
    """The page of a run still going: the question and an empty grid that its script fills
    from the server-sent events at `events` (the URL), turn by turn and vote by vote; when
    the run ends the script puts `run_body` of its result in its place."""
    head = "".join(f"<th>{_e(agent)}</th>" for agent in agents)
    body = f"""<div id="run" data-events="{_e(events)}" data-agents="{_e(json.dumps(agents))}">
<h1>moot run</h1>
<div class="question">{_e(question)}</div>
<div class="final pending" id="final-answer">final answer: <b>…</b></div>
<div class="meta" id="status">waiting for its turn to run</div>
<h2>Rounds × agents</h2>
<table id="grid"><tr><th></th>{head}<th>vote</th></tr></table>
<div class="small">{_LEGEND} Turns appear as agents finish them.</div>
</div>"""
    script = resources.files("moot.viewer").joinpath("live.js").read_text(encoding="utf-8")
    return _page(f"moot (live): {_one_line(question)[:80]}", body, script)


def runs_html(runs: list[tuple[str, str, str]]) -> str:
    """A server's list of runs, each (its page's URL, what was asked, where it stands)."""
    items = "".join(
        f"<li><a href='{_e(link)}'>{_e(asked)}</a> · {_e(state)}</li>"
        for link, asked, state in runs
    )
    return _page(
        "moot runs", f"<h1>moot runs</h1><ul id='runs'>{items or '<li>none yet</li>'}</ul>"
    )


def vote_cell(stats: RoundStats | None) -> str:
    """A round's vote: each answer and its count, and the agreement (empty before it closes)."""
    if stats is None:
        return "<td class='vote'></td>"
    counts = ", ".join(f"{_e(a)} ×{n}" for a, n in stats.answers.items()) or "-"
    return f"<td class='vote'>{counts}<div class='small'>agreement {stats.agreement:.0%}</div></td>"


def turn_cell(turn: Turn | None, changed: bool) -> str:
    """One agent's turn: its answer, opening to the reply (an empty cell for no turn)."""
    if turn is None:
        return "<td></td>"
    classes = "turn" + (" failed" if turn.failed else "") + (" changed" if changed else "")
    shown = "failed" if turn.failed else (turn.answer if turn.answer is not None else "no answer")
    details = [f"{turn.usage.total_tokens} tokens"]
    if turn.confidence is not None:
        details.append(f"confidence {turn.confidence:.2f}")
    if turn.usage.cost is not None:
        details.append(f"cost {format_cost(turn.usage.cost)}")
    saw = f"<div class='small'>saw: {_e(', '.join(turn.peers))}</div>" if turn.peers else ""
    saw += "".join(
        f"<div class='tool{' failed' if call.failed else ''}'>tool {_e(call.summary())}</div>"
        for call in turn.tool_calls
    )
    if turn.tool_calls:
        details.append(f"{len(turn.tool_calls)} tool calls")
    text = turn.error if turn.failed else turn.text
    return (
        f"<td class='{classes}' data-agent='{_e(turn.agent)}' data-round='{turn.round}'>"
        f"<details><summary><span class='answer'>{_e(shown)}</span> "
        f"<span class='small'>{_e(' · '.join(details))}</span></summary>"
        f"<div class='small'>{_e(turn.role)}</div>{saw}<pre>{_e(text or '')}</pre></details></td>"
    )


def _agreement_chart(points: list[tuple[int, float]]) -> str:
    """Agreement per round as an inline SVG line chart (0-100%)."""
    if not points:
        return "<div class='small'>no rounds</div>"
    width, height, left, bottom = 360, 160, 40, 24
    last = max(max(r for r, _ in points), 2)

    def x(round: int) -> float:
        return left + (round - 1) * (width - left - 16) / (last - 1)

    def y(share: float) -> float:
        return 8 + (1 - share) * (height - bottom - 8)

    line = " ".join(f"{x(r):.1f},{y(a):.1f}" for r, a in points)
    dots = "".join(
        f"<circle cx='{x(r):.1f}' cy='{y(a):.1f}' r='3' fill='#1456b8'/>" for r, a in points
    )
    ticks = "".join(
        f"<text x='{x(r):.1f}' y='{height - 6}' text-anchor='middle'>{r}</text>" for r, _ in points
    )
    grid = "".join(
        f"<line x1='{left}' x2='{width - 8}' y1='{y(s):.1f}' y2='{y(s):.1f}' stroke='#ddd'/>"
        f"<text x='{left - 6}' y='{y(s) + 4:.1f}' text-anchor='end'>{s:.0%}</text>"
        for s in (0.0, 0.5, 1.0)
    )
    return (
        f"<svg id='agreement' width='{width}' height='{height}' role='img' "
        f"aria-label='agreement per round'>{grid}<polyline points='{line}' fill='none' "
        f"stroke='#1456b8' stroke-width='2'/>{dots}{ticks}</svg>"
    )


# -- a benchmark ---------------------------------------------------------------------------------


def _bench_groups(records: list[BenchRecord]) -> dict[tuple[str, str, str], list[BenchRecord]]:
    groups: dict[tuple[str, str, str], list[BenchRecord]] = defaultdict(list)
    for record in records:
        groups[record.task, record.model, record.settings].append(record)
    return groups


def bench_markdown(records: list[BenchRecord]) -> str:
    """Methods x questions: right or wrong per question, accuracy per method."""
    lines = ["# moot bench"]
    for (task, model, settings), group in _bench_groups(records).items():
        methods = list(dict.fromkeys(r.method for r in group))
        questions = list(dict.fromkeys(r.question_id for r in group))
        cell = {(r.method, r.question_id): r for r in group if r.trial == 0}
        references = {r.question_id: r.reference for r in group}
        lines += ["", f"## {task}", "", f"Model `{model}`, {settings}.", ""]
        lines += [
            "| question | reference | " + " | ".join(methods) + " |",
            "|---|---|" + "---|" * len(methods),
        ]
        for question in questions:
            marks = [_mark(cell.get((method, question))) for method in methods]
            reference = _cell(references[question])
            lines.append(f"| {question} | {reference} | " + " | ".join(marks) + " |")
        accuracy = [_accuracy([r for r in group if r.method == m]) for m in methods]
        lines.append("| **accuracy** | | " + " | ".join(accuracy) + " |")
    return "\n".join(lines) + "\n"


def bench_html(records: list[BenchRecord]) -> str:
    """Methods x questions, accuracy per method; each cell opens that question's run below."""
    sections = []
    for number, ((task, model, settings), group) in enumerate(_bench_groups(records).items()):
        methods = list(dict.fromkeys(r.method for r in group))
        questions = list(dict.fromkeys(r.question_id for r in group))
        cell = {(r.method, r.question_id): r for r in group if r.trial == 0}
        head = "".join(f"<th>{_e(m)}</th>" for m in methods)
        rows, runs = [], []
        for question in questions:
            cells = []
            for method in methods:
                record = cell.get((method, question))
                anchor = f"run-{number}-{_slug(method)}-{_slug(question)}"
                kind = "" if record is None else ("right" if record.correct else "wrong")
                answer = "" if record is None else _e(record.answer or "none")
                cells.append(f"<td class='{kind}'><a href='#{anchor}'>{answer}</a></td>")
                if record is not None:
                    runs.append(_bench_run(record, anchor))
            reference = cell.get((methods[0], question))
            expected = _e(reference.reference) if reference else ""
            rows.append(f"<tr><th>{_e(question)}</th><td>{expected}</td>{''.join(cells)}</tr>")
        accuracy = "".join(
            f"<td><b>{_accuracy([r for r in group if r.method == m])}</b></td>" for m in methods
        )
        sections.append(
            f"<h2>{_e(task)}</h2><div class='meta'>model {_e(model)} · {_e(settings)}</div>"
            f"<table class='bench'><tr><th>question</th><th>reference</th>{head}</tr>"
            f"{''.join(rows)}<tr><th>accuracy</th><td></td>{accuracy}</tr></table>"
            f"<h2>Runs</h2>{''.join(runs)}"
        )
    return _page("moot bench", "<h1>moot bench</h1>" + "".join(sections))


def _bench_run(record: BenchRecord, anchor: str) -> str:
    """One question's run: each round's answers per agent and the round's vote."""
    agents = list(dict.fromkeys(a for r in record.per_round for a in r.answers))
    head = "".join(f"<th>{_e(a)}</th>" for a in agents)
    rows = []
    for r in record.per_round:
        cells = "".join(
            f"<td class='{_right(r.correct.get(a))}'>{_e(r.answers.get(a) or '-')}</td>"
            for a in agents
        )
        vote = _right(r.vote_correct)
        rows.append(
            f"<tr><th>round {r.round}</th>{cells}<td class='{vote}'>{_e(r.vote or '-')}</td></tr>"
        )
    summary = (
        f"{_e(record.method)} on {_e(record.question_id)}: {_e(record.answer or 'none')} "
        f"({'right' if record.correct else 'wrong'}; reference {_e(record.reference)}; "
        f"{record.tokens:,} tokens)"
    )
    error = f"<div class='small'>error: {_e(record.error)}</div>" if record.error else ""
    replies = _transcript_grid(record.transcript) if record.transcript else ""
    return (
        f"<details id='{anchor}'><summary>{summary}</summary>{error}"
        f"<table class='votes'><tr><th></th>{head}<th>vote</th></tr>{''.join(rows)}</table>"
        f"{replies}</details>"
    )


def _transcript_grid(turns: list[Turn]) -> str:
    """The replies of a bench run, rounds x agents, each opening to its text."""
    agents = list(dict.fromkeys(turn.agent for turn in turns))
    rounds = sorted({turn.round for turn in turns})
    by_cell = {(turn.agent, turn.round): turn for turn in turns}
    rows = "".join(
        f"<tr><th>round {r}</th>"
        + "".join(turn_cell(by_cell.get((a, r)), changed=False) for a in agents)
        + "</tr>"
        for r in rounds
    )
    head = "".join(f"<th>{_e(a)}</th>" for a in agents)
    return f"<table class='replies'><tr><th></th>{head}</tr>{rows}</table>"


def _right(correct: bool | None) -> str:
    return "right" if correct else "wrong"


def _accuracy(records: list[BenchRecord]) -> str:
    return f"{sum(r.correct for r in records) / len(records):.0%}" if records else "-"


def _mark(record: BenchRecord | None) -> str:
    if record is None:
        return ""
    return f"{'✓' if record.correct else '✗'} {_cell(record.answer or 'none')}"


# -- shared --------------------------------------------------------------------------------------


def _page(title: str, body: str, script: str = "") -> str:
    css = resources.files("moot.viewer").joinpath("page.css").read_text(encoding="utf-8")
    tail = f"<script>{script}</script>\n" if script else ""
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{css}</style></head>\n<body>\n{body}\n{tail}"
        "</body></html>\n"
    )


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _cell(text: str) -> str:
    """Text for one Markdown table cell."""
    return _one_line(text).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in text)
