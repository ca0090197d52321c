"""Multi-agent debate (Du et al. 2023) and societies of MachineSoM (Zhang et al. 2024).

Round 1: every agent answers the question on its own. In each later round an agent either
debates (it is shown its neighbours' answers from the round before, by the topology) or
reflects (it re-examines only its own answer), continuing its own conversation, so each prompt
extends the agent's previous one. The strategy is written per round, and may differ per agent.

The prompts are moot's own by default; `prompt_set="du-gsm8k"` (or du-arithmetic, du-mmlu)
sends Du et al.'s, word for word, as their code does (composable-models/llm_multiagent_debate),
and "som-mmlu" or "som-math" MachineSoM's (zjunlp/MachineSoM), with its layout: each agent is
first told its expert role and character, and a debating agent is shown only the other agents
that debate in the same round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import Field, model_validator

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.graphs._rounds import AgentTask, RoundProtocol
from moot.graphs.helpers import note_after, program_prompt
from moot.graphs.types import RunContext
from moot.result import Turn

Move = Literal["debate", "reflect"]
RoundStrategy = Move | dict[str, Move]
"""One round's move for every agent, or a move per agent name (unnamed agents debate)."""
Topology = Literal["all", "ring", "star"] | dict[str, list[str]]
PromptSet = Literal["moot", "du-gsm8k", "du-arithmetic", "du-mmlu", "som-mmlu", "som-math"]
_PAPER_READS: dict[str, tuple[str, ...]] = {
    "du-gsm8k": ("number", "boxed"),
    "du-arithmetic": ("number",),
    "du-mmlu": ("choice",),
    "som-mmlu": ("choice",),
    "som-math": ("boxed", "number"),
}
"""The answer formats each paper's prompt set asks for."""


TINY_PARAMETERS = 300_000_000
"""Models below this many parameters get the tiny update prompt (SmolLM2-135M, gemma-270m)."""


def is_tiny(model: Any) -> bool:
    """Whether `model` states a parameter count (local llama.cpp models do) below the bound."""
    parameters = getattr(model, "parameters", None)
    return isinstance(parameters, int) and parameters < TINY_PARAMETERS


def answer_format_of(prompt_set: str) -> str:
    """The answer format to read a prompt set's replies in (moot's: chosen per question)."""
    return _PAPER_READS.get(prompt_set, ("auto",))[0]


@dataclass(frozen=True)
class _Kept:
    """An agent's conversation as built for `round`, and the peers its last message shows."""

    round: int
    conversation: list[BaseMessage]
    peers: list[str]


_SOM_TRAITS = ("easy-going", "overconfident")
"""moot's traits for MachineSoM's two characters ("temperate" and "confident")."""
_SOM_ACKNOWLEDGEMENT = "ok"
"""The reply MachineSoM's agents are asked to give to their role ("say ok only")."""


class Debate(RoundProtocol):
    """Debate in rounds; `rounds` counts the first, independent answer.

    `Debate(rounds=3)` is Du et al.'s debate; `Debate(strategy="debate-reflect-debate")` is a
    MachineSoM society's collaboration (4 rounds: the first answer, then three moves).
    """

    kind: Literal["debate"] = "debate"
    """The name of this protocol in society files and specs (`moot.spec`)."""

    strategy: list[RoundStrategy] | None = None
    """Moves for rounds 2..rounds (None: debate every round). A string "debate-reflect-debate"
    is read as a list; with a strategy and no `rounds`, rounds = 1 + len(strategy)."""
    topology: Topology = "all"
    """Whom each agent is shown: all others; its two ring neighbours; in a star, the hub is
    shown everyone and the others only the hub; or a mapping agent -> agents it is shown."""
    hub: str | None = None
    """The star's hub (default: the first agent)."""
    peers_shown: int | None = Field(default=None, ge=1)
    """Show each agent at most this many of the peers its topology gives it, the ones after it
    in agent order (wrapping round): sparse views, in which answers spread more slowly and
    one confident agent sways fewer others (Li et al. 2024). None: all of them."""
    peer_view: Literal["full", "answer", "tail"] = "full"
    """How others' replies are shown: in full (after a line per tool call the agent made, with
    its result), only their extracted answer, or their last `peer_chars` characters (bounded
    context for long debates)."""
    peer_chars: int = Field(default=600, ge=20)
    anonymous: bool = False
    """Show peers' replies without their names, so no agent is followed for who it is
    (identity bias: Choi et al. 2025)."""
    update_style: Literal["open", "keep"] = "open"
    """How a debating agent is asked to update (moot's prompts): "open", using the peers'
    reasoning as advice (Du et al.); "keep", keeping its own answer unless it finds a specific
    error in its own work, which it must name (anti-conformity, Free-MAD)."""
    prompt_set: PromptSet = "moot"
    """Whose prompts: moot's ("moot": a system prompt per role, step-by-step work, an "Answer:"
    line, peers shown by name), or Du et al.'s for one of their tasks, word for word and with no
    system prompt: "du-gsm8k" (\\boxed{} answers), "du-arithmetic" ("state your answer at the
    end") or "du-mmlu" ("(X)"); or MachineSoM's, "som-mmlu" or "som-math", where each agent's
    trait (easy-going or overconfident; none is easy-going) becomes their role message."""

    @model_validator(mode="before")
    @classmethod
    def _read_strategy(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("strategy") is None:
            return data
        data = dict(data)
        strategy = data["strategy"]
        if isinstance(strategy, str):
            strategy = [move.strip() for move in strategy.split("-")]
            data["strategy"] = strategy
        if "rounds" not in data:
            data["rounds"] = 1 + len(strategy)
        return data

    @model_validator(mode="after")
    def _strategy_fits_rounds(self) -> Debate:
        if self.strategy is not None and len(self.strategy) != self.rounds - 1:
            raise ValueError(
                f"strategy has {len(self.strategy)} moves but rounds={self.rounds} needs "
                f"{self.rounds - 1} (one per round after the first)"
            )
        return self

    def check(self, agents: list[Agent], aggregator: Aggregator) -> None:
        names = {agent.name for agent in agents}
        mentioned: set[str] = set()
        if isinstance(self.topology, dict):
            mentioned |= set(self.topology) | {n for seen in self.topology.values() for n in seen}
        if self.hub is not None:
            mentioned.add(self.hub)
        for move in self.strategy or []:
            if isinstance(move, dict):
                mentioned |= set(move)
        unknown = sorted(mentioned - names)
        if unknown:
            raise ValueError(f"the debate names unknown agents: {', '.join(unknown)}")
        if self.prompt_set != "moot":
            self._check_paper(agents, aggregator)
        if isinstance(self.topology, dict):
            selfish = sorted(name for name, seen in self.topology.items() if name in seen)
            if selfish:
                raise ValueError(
                    f"the topology shows {', '.join(selfish)} their own answer as a peer's: "
                    "an agent already sees its own answers (use a reflect move to have it "
                    "re-examine them)"
                )

    def default_aggregator(self) -> Aggregator:
        """A vote in the answer format the prompt set asks for (a paper's choice letters...)."""
        from moot.aggregate.vote import MajorityVote

        return MajorityVote(extract=answer_format_of(self.prompt_set))

    def _check_paper(self, agents: list[Agent], aggregator: Aggregator) -> None:
        programs = [agent.name for agent in agents if agent.kind == "program"]
        if programs:
            raise ValueError(
                f"prompt_set {self.prompt_set} never asks for a program, so program agents "
                f"{', '.join(programs)} would fail every turn: use prompt_set moot for them"
            )
        reads = _PAPER_READS[self.prompt_set]
        if isinstance(aggregator.extract, str) and aggregator.extract not in reads:
            raise ValueError(
                f"prompt_set {self.prompt_set} asks for answers read as {' or '.join(reads)}, "
                f"but the society reads them as {aggregator.extract}: set extract to "
                f"{reads[0]}, or use prompt_set moot"
            )
        if self._som:
            odd = [agent.name for agent in agents if agent.trait not in (None, *_SOM_TRAITS)]
            if odd:
                raise ValueError(
                    f"prompt_set {self.prompt_set} knows MachineSoM's two characters, traits "
                    f"{' and '.join(_SOM_TRAITS)}; {', '.join(odd)} have others"
                )
            return
        traited = [agent.name for agent in agents if agent.trait]
        if traited:
            raise ValueError(
                f"prompt_set {self.prompt_set} sends no system prompt, so the traits of "
                f"{', '.join(traited)} would be lost: use prompt_set moot for agents with traits"
            )

    def sends_system_prompt(self) -> bool:
        return self.prompt_set == "moot"

    def asks_for_programs(self) -> bool:
        return self.prompt_set == "moot"

    def asks_in_answer_format(self) -> bool:
        return self.prompt_set == "moot"

    def first_prompt(self, question: str, context: RunContext) -> str:
        if self.prompt_set == "moot":
            return super().first_prompt(question, context)
        return self._paper("question").format(question=question)

    @property
    def _som(self) -> bool:
        return self.prompt_set.startswith("som-")

    def _paper(self, key: str) -> str:
        """A template of the paper's prompt set ("du-gsm8k" -> moot/prompts/du/gsm8k.json)."""
        return prompts.load_set(self.prompt_set.replace("-", "/", 1))[key]

    def _som_role(self, agent: Agent) -> list[BaseMessage]:
        """MachineSoM's opening exchange: the agent's expert role and character, and its "ok"
        (their agents answer it in a call of its own; here the acknowledgement is given)."""
        trait = agent.trait or "easy-going"
        role = self._paper(f"intro_{trait}").format(
            expert=self._paper("expert"), character=self._paper(f"character_{trait}")
        )
        return [HumanMessage(content=role), AIMessage(content=_SOM_ACKNOWLEDGEMENT)]

    def move(self, round: int, agent: str) -> Move:
        """What `agent` does in `round` (>= 2)."""
        if self.strategy is None:
            return "debate"
        move = self.strategy[round - 2]
        return move if isinstance(move, str) else move.get(agent, "debate")

    def neighbours(self, agents: list[Agent], index: int) -> list[str]:
        """Names of the agents whose answers agent `index` is shown when it debates."""
        shown = self._by_topology(agents, index)
        if self.peers_shown is None or len(shown) <= self.peers_shown:
            return shown
        names = [agent.name for agent in agents]
        after_me = names[index + 1 :] + names[:index]
        nearest = set(sorted(shown, key=after_me.index)[: self.peers_shown])
        return [name for name in shown if name in nearest]

    def _by_topology(self, agents: list[Agent], index: int) -> list[str]:
        names = [agent.name for agent in agents]
        me = names[index]
        if isinstance(self.topology, dict):
            return [name for name in names if name in self.topology.get(me, [])]
        if self.topology == "ring":
            count = len(names)
            around = {names[(index - 1) % count], names[(index + 1) % count]} - {me}
            return [name for name in names if name in around]
        if self.topology == "star":
            hub = self.hub or names[0]
            return [name for name in names if name != me] if me == hub else [hub]
        return [name for name in names if name != me]

    def conversation_for(
        self, task: AgentTask, context: RunContext
    ) -> tuple[list[BaseMessage], list[str]]:
        """The agent's whole conversation so far, and the peers shown in its newest message.

        It replays the agent's own replies, each followed by the message of the next round:
        the neighbours' answers (debate) or a request to re-examine (reflect). A finished
        round never changes, so the run keeps each agent's conversation and adds the newest
        round to it, rather than rebuilding every round's messages in every round.
        """
        key = ("debate conversation", id(self), task["agent"])
        kept: _Kept | None = context.memo.get(key)
        if kept is None or kept.round > task["round"]:
            kept = context.memo[key] = _Kept(1, self._opening(task, context), [])
        if kept.round < task["round"]:
            turns_by_round: dict[int, dict[str, Turn]] = {}
            for turn in task["turns"]:
                if turn.round >= kept.round:
                    turns_by_round.setdefault(turn.round, {})[turn.agent] = turn
            conversation, peers = list(kept.conversation), kept.peers
            for past_round in range(kept.round, task["round"]):
                peers = self._after_round(
                    task, context, past_round, turns_by_round.get(past_round, {}), conversation
                )
            kept = _Kept(task["round"], conversation, peers)
            context.memo[key] = kept
        return list(kept.conversation), list(kept.peers)

    def _opening(self, task: AgentTask, context: RunContext) -> list[BaseMessage]:
        """The agent's first messages: its role (MachineSoM) and the question."""
        agent = context.agents[task["agent"]]
        if self._program(agent):
            first = program_prompt(task["question"])
        else:
            first = self.first_prompt(task["question"], context)
        return [*(self._som_role(agent) if self._som else []), HumanMessage(content=first)]

    def _after_round(
        self,
        task: AgentTask,
        context: RunContext,
        past_round: int,
        turns: dict[str, Turn],
        conversation: list[BaseMessage],
    ) -> list[str]:
        """Add to `conversation` the agent's own reply in `past_round` and the message that
        follows it; return the peers that message shows."""
        agent = context.agents[task["agent"]]
        me = agent.name
        answer_format = (
            prompts.load("formats/program")
            if self._program(agent)
            else context.format_instruction()
        )
        own = turns.get(me)
        if own is not None and not own.failed:
            conversation.append(AIMessage(content=own.text))
        neighbours = self._neighbours_of(task["agent"], context)
        shown = [turns[name] for name in neighbours if name in turns and not turns[name].failed]
        if self._som:  # MachineSoM shows a debater only the agents debating with it
            shown = [turn for turn in shown if self.move(past_round + 1, turn.agent) == "debate"]
        if self.move(past_round + 1, me) == "debate" and shown:
            peers = [turn.agent for turn in shown]
            message = (
                self._tiny_update(shown, task["question"], answer_format)
                if self._tiny(task["agent"], context)
                else self._update(shown, task["question"], answer_format, context)
            )
        else:
            peers = []
            message = (
                prompts.render("debate/reflect", format=answer_format)
                if self.prompt_set == "moot"
                else self._paper("reflect").format()
            )
        message += note_after(task["notes"], past_round)
        conversation.append(HumanMessage(content=message))
        return peers

    def _neighbours_of(self, index: int, context: RunContext) -> list[str]:
        """`neighbours`, worked out once a run."""
        key = ("debate neighbours", id(self), index)
        names: list[str] | None = context.memo.get(key)
        if names is None:
            names = context.memo[key] = self.neighbours(context.agents, index)
        return names

    def _tiny(self, index: int, context: RunContext) -> bool:
        """Whether agent `index` gets the tiny model's update (moot's prompts only)."""
        key = ("debate tiny", id(self), index)
        tiny: bool | None = context.memo.get(key)
        if tiny is None:
            tiny = context.memo[key] = self.prompt_set == "moot" and is_tiny(context.models[index])
        return tiny

    def _program(self, agent: Agent) -> bool:
        """Whether `agent` is asked for programs (moot's prompts only)."""
        return agent.kind == "program" and self.prompt_set == "moot"

    def _update(
        self, shown: list[Turn], question: str, answer_format: str, context: RunContext
    ) -> str:
        """The message showing the peers' latest replies."""
        if self.prompt_set == "moot":
            replies = "\n\n".join(self._shown(turn, context) for turn in shown)
            if self.peer_view == "answer" and self.update_style == "open":
                template = "debate/update_answers"
            elif self.update_style == "keep":
                template = "debate/update_keep"
            else:
                template = "debate/update"
            return prompts.render(template, peers=replies, format=answer_format)
        # The papers' code concatenates the peers, unnamed, each starting with a blank line.
        replies = "".join(self._paper("peer").format(text=self._peer_text(turn)) for turn in shown)
        return self._paper("update").format(peers=replies, question=question)

    def _shown(self, turn: Turn, context: RunContext) -> str:
        """`turn` as its peers are shown it (written once a run: every peer is shown it)."""
        key = ("debate peer", id(self), turn.round, turn.agent)
        shown: str | None = context.memo.get(key)
        if shown is None:
            text = self._peer_text(turn)
            shown = context.memo[key] = (
                prompts.render("debate/peer_anonymous", text=text)
                if self.anonymous
                else prompts.render("debate/peer", peer=turn.agent, text=text)
            )
        return shown

    def _tiny_update(self, shown: list[Turn], question: str, answer_format: str) -> str:
        """The update for a tiny model: the question again and the peers' answers alone (the
        usual update, which shows replies and asks for a re-examination, makes models of a few
        hundred million parameters lose the question: BENCHMARKS.md, issue 41)."""
        answers = ", ".join(t.answer if t.answer is not None else "(no answer)" for t in shown)
        return prompts.render(
            "debate/tiny_update", question=question, answers=answers, format=answer_format
        )

    def _peer_text(self, turn: Turn) -> str:
        """What others are shown of `turn`, by `peer_view`."""
        if self.peer_view == "answer":
            return turn.answer if turn.answer is not None else "(no clear answer)"
        if self.peer_view == "tail" and len(turn.text) > self.peer_chars:
            return "..." + turn.text[-self.peer_chars :]
        return "\n".join([*(f"[{call.summary()}]" for call in turn.tool_calls), turn.text])
