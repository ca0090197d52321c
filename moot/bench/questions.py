"""One question of a benchmark plan run and recorded: the work both backends (local threads
and Ray workers) share."""

from __future__ import annotations

import threading
import time

from moot.aggregate.vote import MajorityVote
from moot.bench.methods import build_method
from moot.bench.records import BenchPlan, BenchRecord, RoundRecord, WorkItem
from moot.errors import MootError
from moot.result import Result, Turn
from moot.society import Society

_PLURALITY = MajorityVote()
"""A round's vote: what stopping the debate after that round gives."""


class QuestionRunner:
    """Runs work items of one plan; builds each (method, trial) society once."""

    def __init__(self, plan: BenchPlan) -> None:
        self.plan = plan
        self._societies: dict[tuple[str, int], Society] = {}
        self._lock = threading.Lock()

    def society(self, method: str, trial: int) -> Society:
        with self._lock:
            if (method, trial) not in self._societies:
                self._societies[method, trial] = build_method(
                    method, self.plan.task.extract, self.plan.settings, trial
                )
            return self._societies[method, trial]

    def run(self, item: WorkItem) -> BenchRecord:
        task = self.plan.task
        question = task.questions[item.question]
        name, method, model, settings, trial, question_id = self.plan.key(item)
        unanswered = BenchRecord(
            task=name,
            method=method,
            model=model,
            settings=settings,
            trial=trial,
            question_id=question_id,
            reference=question.answer,
            answer=None,
            correct=False,
        )
        society = self.society(item.method, item.trial)
        started = time.perf_counter()
        try:
            result = society.run(question.question, cache=self.plan.cache)
        except MootError as error:
            seconds = round(time.perf_counter() - started, 3)
            return unanswered.model_copy(update={"seconds": seconds, "error": str(error)})
        participants = [agent.name for agent in society.agents]
        return unanswered.model_copy(
            update={
                "answer": result.answer,
                "correct": task.is_correct(result.answer, question),
                "input_tokens": result.usage.input_tokens,
                "output_tokens": result.usage.output_tokens,
                "tokens": result.usage.total_tokens,
                "calls": result.usage.calls,
                "cost": result.usage.cost,
                "cached_calls": result.usage.cached_calls,
                "deferred_tokens": sum(_deferred(turn) for turn in result.turns),
                "tool_calls": sum(len(turn.tool_calls) for turn in result.turns),
                "seconds": round(time.perf_counter() - started, 3),
                "rounds": result.rounds,
                "stop_reason": result.stop_reason,
                "failed_turns": sum(turn.failed for turn in result.turns),
                "per_round": self._rounds(result, participants, item.question),
                "transcript": result.turns,
            }
        )

    def _rounds(self, result: Result, participants: list[str], index: int) -> list[RoundRecord]:
        task, question = self.plan.task, self.plan.task.questions[index]
        records = []
        for stats in result.conformity:
            turns = [t for t in result.round_turns(stats.round) if t.agent in participants]
            answers = {turn.agent: turn.answer for turn in turns}
            vote = _PLURALITY.vote(list(answers.values()))
            records.append(
                RoundRecord(
                    round=stats.round,
                    answers=answers,
                    correct={name: task.is_correct(a, question) for name, a in answers.items()},
                    vote=vote,
                    vote_correct=task.is_correct(vote, question),
                    agreement=stats.agreement,
                    tokens=sum(turn.usage.total_tokens for turn in turns),
                    calls=sum(turn.usage.calls for turn in turns),
                )
            )
        return records


def _deferred(turn: Turn) -> int:
    fusion = turn.fusion
    return fusion.tokens_by_model[1] if fusion and fusion.deferral_rate is not None else 0
