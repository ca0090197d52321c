"""Prompt-lookup drafting in a debate's later rounds: rounds 2 and 3 with drafts and without.

Each question's recorded 3x3 debate (a `moot bench` transcript) gives the conversations of its
rounds 2 and 3, built by moot's own `Debate` from the recorded turns. For each round, its three
conversations are sent at once to a batched-engine model loaded with `draft=0` and to one with
`draft=N`, the two alternating. Each conversation is first sent with max_tokens=1, so that its
prompt sits in its sequence and the timed request evaluates next to nothing of it (as in a real
debate, where each agent's history is already there): the timed wall is generation. Greedy, so
that the two replies can be compared token for token.

    python benchmarks/drafting.py --transcripts benchmarks/results/quality/gsm8k-qwen1.5b-du \
        --data ../shared/data/gsm8k/dev.jsonl --prompts du-gsm8k --questions 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage

import moot
from moot.graphs._rounds import AgentTask
from moot.models.llama import ChatLlama
from moot.result import Turn


def debates(transcripts: Path, questions: dict[str, str], limit: int) -> list[tuple[str, list]]:
    """(question, turns) of the first `limit` recorded 3x3 debates."""
    found = []
    for line in (transcripts / "transcripts.jsonl").open():
        record = json.loads(line)
        if record["key"][1] != "debate-3x3" or record["key"][-1] not in questions:
            continue
        turns = [Turn.model_validate(turn) for turn in record["turns"]]
        found.append((questions[record["key"][-1]], turns))
        if len(found) == limit:
            break
    return found


def conversations(society: moot.Society, question: str, turns: list[Turn], round: int):
    """Each agent's messages in `round`, as the debate builds them from the earlier turns."""
    run = society._run(question, {})
    context = run.context(question)
    protocol = society.protocol
    assert isinstance(protocol, moot.Debate)
    earlier = [turn for turn in turns if turn.round < round]
    built: list[list[BaseMessage]] = []
    for index, agent in enumerate(society.agents):
        task = AgentTask(question=question, round=round, agent=index, turns=earlier, notes=[])
        conversation, _ = protocol.conversation_for(task, context)
        system = [SystemMessage(agent.system_prompt())] if protocol.sends_system_prompt() else []
        built.append([*system, *conversation])
    return built


def timed_round(
    model: ChatLlama, prompts: list[list[BaseMessage]], max_tokens: int, together: bool
):
    """Wall of the round's requests sent at once, or one after another (their prompts already
    evaluated), and their replies."""
    with ThreadPoolExecutor(len(prompts) if together else 1) as pool:
        list(pool.map(lambda m: model.invoke(m, max_tokens=1, temperature=0), prompts))
        before = model.stats.model_copy()
        started = time.perf_counter()
        replies = list(
            pool.map(lambda m: model.invoke(m, max_tokens=max_tokens, temperature=0), prompts)
        )
        wall = time.perf_counter() - started
    after = model.stats
    counts = {
        field: getattr(after, field) - getattr(before, field)
        for field in ("output_tokens", "decode_steps", "drafted", "draft_kept")
    }
    return wall, [reply.text for reply in replies], counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transcripts", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--prompts", default="moot", help="moot or a paper's set (du-gsm8k)")
    parser.add_argument(
        "--model", default="llama:~/.cache/moot-bench/qwen2.5-coder-1.5b-instruct.gguf"
    )
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--draft", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument(
        "--one-at-a-time", action="store_true", help="send a round's requests one by one"
    )
    args = parser.parse_args()

    questions = {}
    for line in args.data.open():
        item = json.loads(line)
        questions[item["id"]] = item["question"]
    spec = str(Path(args.model.removeprefix("llama:")).expanduser())
    models = {
        draft: moot.load_model(f"llama:{spec}", engine="batched", n_ctx=4096, draft=draft)
        for draft in (0, args.draft)
    }
    base = next(iter(models.values()))
    agents = [moot.Agent(name=f"agent{i + 1}", model=base) for i in range(3)]
    extract = "number"
    society = moot.Society(
        agents=agents,
        protocol=moot.Debate(rounds=3, prompt_set=args.prompts),
        aggregator=moot.MajorityVote(extract=extract),
    )
    walls: dict[int, list[float]] = {draft: [] for draft in models}
    totals: dict[int, dict[str, int]] = {draft: {} for draft in models}
    same = differ = 0
    for question, turns in debates(args.transcripts, questions, args.questions):
        for round in (2, 3):
            prompts = conversations(society, question, turns, round)
            texts: dict[int, list[str]] = {}
            for draft, model in models.items():
                assert isinstance(model, ChatLlama)
                wall, texts[draft], counts = timed_round(
                    model, prompts, args.max_tokens, not args.one_at_a_time
                )
                walls[draft].append(wall)
                for field, value in counts.items():
                    totals[draft][field] = totals[draft].get(field, 0) + value
                print(f"round {round} draft={draft}: {wall:.1f} s {counts}", flush=True)
            for plain, drafted in zip(texts[0], texts[args.draft], strict=True):
                same += plain == drafted
                differ += plain != drafted
    print()
    layout = "one at a time" if args.one_at_a_time else "3 at once"
    print(
        f"| {args.prompts} prompts, {layout} | wall of rounds 2-3 | output tokens "
        "| tokens / decode step | drafted | kept |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for draft in models:
        t: dict[str, Any] = totals[draft]
        print(
            f"| draft={draft} | {sum(walls[draft]):.1f} s | {t['output_tokens']} "
            f"| {t['output_tokens'] / max(1, t['decode_steps']):.2f} | {t['drafted']} "
            f"| {t['draft_kept']} |"
        )
    ratios = [a / b for a, b in zip(walls[0], walls[args.draft], strict=True)]
    print(
        f"\nspeed-up per round (wall without / with), median: {statistics.median(ratios):.2f}; "
        f"replies identical with and without drafts: {same} of {same + differ}"
    )


if __name__ == "__main__":
    main()
