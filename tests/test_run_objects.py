"""The objects behind a run: the public vocabulary, model profiles declared once (never sniffed,
never written into the model), the backend registry, one set of run options for every way to
run, and a call written once for sync and async runs."""

from __future__ import annotations

import asyncio
import gc
import inspect

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

import moot
import moot.aggregate.base
import moot.graphs.base
from moot.graphs import types
from moot.graphs._runtime import CallRunner
from moot.graphs.run import CompiledGraphs, RunOptions
from moot.models import PROFILES, Backends, ModelProfile, ModelProfiles
from moot.testing import ScriptedChatModel


def answering(reply: str = "Answer: 7") -> ScriptedChatModel:
    return ScriptedChatModel(respond=lambda messages: reply)


class Words(ScriptedChatModel):
    """A scripted model that counts words as tokens."""

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())


class Recording(ScriptedChatModel):
    """A scripted model that keeps the options of every call."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.__dict__.setdefault("options", []).append(kwargs)
        return super()._generate(messages, stop, run_manager, **kwargs)


# -- the vocabulary ------------------------------------------------------------------------------


def test_the_vocabulary_is_one_public_module_that_the_contracts_re_export():
    for name in ("Call", "Calls", "RunContext", "SocietyState", "Speaker", "Update", "agent_node"):
        assert getattr(moot.graphs.base, name) is getattr(types, name)
    assert moot.aggregate.base.Aggregator is types.Aggregator is moot.Aggregator


def test_a_node_body_is_driven_sync_and_async_from_one_generator():
    seen: list[str] = []

    def steps():
        seen.append((yield "first"))
        try:
            yield "boom"
        except ValueError as error:
            seen.append(str(error))
        return "done"

    def run(step: str) -> str:
        if step == "boom":
            raise ValueError("thrown back in")
        return step.upper()

    async def arun(step: str) -> str:
        return run(step)

    assert types.drive(steps(), run) == "done"
    assert asyncio.run(types.adrive(steps(), arun)) == "done"
    assert seen == ["FIRST", "thrown back in"] * 2


# -- model profiles ------------------------------------------------------------------------------


def test_profiles_live_beside_the_model_and_go_with_it():
    profiles, model = ModelProfiles(), answering()
    assert profiles.of(model) == ModelProfile(tool_calling=True)  # it implements bind_tools
    profiles.declare(model, prices=(1.0, 2.0), context_window=64)
    assert profiles.of(model).prices == (1.0, 2.0) and profiles.of(model).context_window == 64
    assert model.metadata == answering().metadata  # nothing was written into the model
    with pytest.raises(TypeError, match="no field speed"):
        profiles.declare(model, speed=3)
    del model
    gc.collect()
    assert not profiles._declared


def test_load_model_keeps_prices_in_the_profile_not_in_the_model():
    model = moot.load_model(answering(), price_in=0.5, price_out=1.5)
    assert PROFILES.of(model).prices == (0.5, 1.5)
    assert model.metadata == answering().metadata
    assert PROFILES.of(model).cost(1_000_000, 1_000_000) == 2.0
    assert PROFILES.of(answering()).cost(10, 10) is None


def test_a_declared_timeout_and_answer_schema_reach_the_model_and_nothing_else_does():
    class Sum(BaseModel):
        total: int

    told, plain = (
        Recording(respond=lambda m: 'Done. {"total": 7}'),
        Recording(respond=lambda m: "7"),
    )
    PROFILES.declare(told, takes_timeout=True, takes_answer_schema=True)
    agents = [
        moot.Agent(name="told", model=told, timeout=30),
        moot.Agent(name="plain", model=plain),
    ]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1), answer_schema=Sum)
    society.run("What is 3 + 4?")
    (options,) = told.__dict__["options"]
    assert options["timeout"] == 30 and options["answer_schema"]["title"] == "Sum"
    assert plain.__dict__["options"] == [{}]


def test_a_declared_context_window_refuses_a_question_before_any_call():
    model = Words(respond=lambda messages: "Answer: 7")
    PROFILES.declare(model, context_window=5)
    society = moot.Society(agents=[moot.Agent(name="a", model=model)])
    with pytest.raises(moot.ContextLengthError, match="context window is 5"):
        society.run("What is 3 + 4?")
    assert model.call_count == 0


def test_a_run_reads_each_model_s_profile_once():
    class Counting(ModelProfiles):
        reads = 0

        def of(self, model):
            Counting.reads += 1
            return super().of(model)

    model = answering()
    runner = CallRunner(profiles=Counting())
    agent = moot.Agent(name="a", model=model)
    call = types.Call(types.Speaker(agent, model, moot.MajorityVote()), [HumanMessage("q")], 1)
    turns = runner.call([call, call]) + asyncio.run(runner.acall([call, call]))
    assert [turn.answer for turn in turns] == ["7"] * 4 and Counting.reads == 1


# -- backends --------------------------------------------------------------------------------


def test_a_backend_registry_is_an_object_a_test_can_make():
    registry = Backends()
    registry.register("canned", lambda rest, options: answering(f"Answer: {rest}"), "canned:N")
    assert registry.usage() == {"canned": "canned:N"}
    model = registry.load("canned:5", price_in=1)
    assert model.invoke("q").text == "Answer: 5" and PROFILES.of(model).prices == (1.0, 0.0)
    with pytest.raises(moot.ModelSpecError, match="unknown model spec 'test'"):
        registry.load("test")
    assert "canned" not in moot.models.backends()  # the default registry is untouched


# -- one way to run --------------------------------------------------------------------------


def test_every_way_to_run_takes_the_run_options():
    for name in ("run", "arun", "stream", "astream", "resume", "aresume"):
        options = inspect.signature(getattr(moot.Society, name)).parameters["options"]
        assert options.kind is inspect.Parameter.VAR_KEYWORD
    assert set(RunOptions.__optional_keys__) == {
        "config",
        "checkpoint",
        "thread_id",
        "moderator",
        "fresh",
        "cache",
    }


def test_a_misspelt_option_or_a_resume_without_its_checkpoint_is_refused():
    society = moot.Society(agents=[moot.Agent(name="a", model=answering())])
    with pytest.raises(TypeError, match="'chekpoint'"):
        society.run("q", chekpoint="runs.sqlite")  # type: ignore[call-arg]
    with pytest.raises(moot.ConfigError, match="resume needs the run's checkpoint"):
        society.resume(thread_id="t")
    with pytest.raises(moot.ConfigError, match="fresh=True starts a run over"):
        society.resume(checkpoint="runs.sqlite", thread_id="t", fresh=True)


def test_a_protocol_is_compiled_once_a_copy_apart_and_equality_is_untouched():
    graphs = CompiledGraphs(size=2)
    debate = moot.Debate(rounds=2)
    assert graphs.of(debate, asynchronous=False) is graphs.of(debate, asynchronous=False)
    assert graphs.of(debate, asynchronous=True) is not graphs.of(debate, asynchronous=False)
    longer = debate.model_copy(update={"rounds": 3})
    assert graphs.of(longer, asynchronous=False) is not graphs.of(debate, asynchronous=False)
    assert len(graphs._graphs) == 2  # the oldest went
    society = moot.Society(agents=[moot.Agent(name="a", model=answering())], protocol=longer)
    assert society.run("q").rounds == 3
    assert society.protocol == moot.Debate(rounds=3)  # a run leaves nothing in it


def test_the_llama_model_declares_what_it_takes(embedded_model):
    profile = PROFILES.of(embedded_model)
    assert profile.takes_timeout and profile.takes_answer_schema and profile.takes_grammar
    assert profile.context_window == embedded_model.context_window and profile.tool_calling
