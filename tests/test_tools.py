"""Agents that call tools: the built-in calculator, the tool loop inside a turn (results,
errors, malformed and unknown calls, the call limit, a tool that hangs), what peers see, and
tools named in society files and on the command line. Scripted tool-calling models make the
loop exact."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

import moot
from moot import prompts
from moot.cli import main
from moot.testing import ScriptedChatModel
from moot.tools import CalculatorError, calculate
from tests.conftest import tool_calls_message as calls
from tests.conftest import tool_results


@pytest.mark.parametrize(
    "expression, value",
    [
        ("1234 * 5678", "7006652"),
        ("1/3*3", "1"),
        ("(2 + 3) * -4", "-20"),
        ("7 / 2", "3.5"),
        ("2^10", "1024"),
        ("1,234 + 1", "1235"),
        ("10 // 3 + 10 % 3", "4"),
        ("0.1 + 0.2", "0.3"),
        ("1 / 3", "0.333333333333 (rounded)"),
    ],
)
def test_the_calculator_is_exact(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression, problem",
    [
        ("__import__('os').system('true')", "only numbers"),
        ("open('/etc/passwd')", "only numbers"),
        ("2 ** 10 ** 10", "more than 1000 digits"),
        ("9" * 2000, "more than 1000 digits"),
        ("1 / 0", "division by zero"),
        ("2 ** 0.5", "whole exponent"),
        ("", "empty"),
        ("two plus two", "not an arithmetic expression"),
        ("True + 1", "only numbers"),
    ],
)
def test_the_calculator_refuses_what_is_not_arithmetic(expression, problem):
    with pytest.raises(CalculatorError, match=problem):
        calculate(expression)


def multiplier(messages):
    """Calls the calculator once, then answers with what it returned."""
    results = tool_results(messages)
    if not results:
        return calls(("calculator", {"expression": "1234*5678"}))
    return f"The calculator says {results[-1]}.\nAnswer: {results[-1]}"


def society(model, rounds=1, agents=2, **agent_options) -> moot.Society:
    options = {"tools": ["calculator"], **agent_options}
    members = [moot.Agent(name=f"a{i}", model=model, **options) for i in range(agents)]
    return moot.Society(agents=members, protocol=moot.Debate(rounds=rounds))


def test_a_turn_calls_a_tool_and_answers_with_its_result():
    model = ScriptedChatModel(respond=multiplier)
    result = society(model).run("What is 1234 times 5678?")
    assert result.answer == "7006652"
    for turn in result.turns:
        (call,) = turn.tool_calls
        assert (call.name, call.arguments, call.result) == (
            "calculator",
            {"expression": "1234*5678"},
            "7006652",
        )
        assert turn.usage.calls == 2  # the call, then the answer
    assert model.bound_tools == ["calculator"]
    # Each agent's first call has no result yet, its second has its own (the two agents run in
    # parallel, so their calls interleave in any order).
    assert sorted(tool_results(call) for call in model.calls) == [[], [], ["7006652"], ["7006652"]]


def test_usage_sums_every_model_call_of_the_turn():
    model = ScriptedChatModel(respond=multiplier)
    turn = society(model, agents=1).run("1234 * 5678?").turns[0]
    words = [sum(len(m.text.split()) for m in call) for call in model.calls]
    assert turn.usage.input_tokens == sum(words)
    assert turn.usage.output_tokens == 1 + 6  # one call, then six words


def test_peers_see_the_tool_calls_and_the_reply():
    model = ScriptedChatModel(respond=multiplier)
    society(model, rounds=2).run("What is 1234 times 5678?")
    round_two = [call for call in model.calls if "other agents" in call[-1].text.lower()]
    assert round_two, "round 2 shows the peers' replies"
    shown = round_two[0][-1].text if isinstance(round_two[0][-1], HumanMessage) else ""
    assert "[calculator(expression='1234*5678') -> 7006652]" in shown


def test_a_failing_unknown_or_malformed_call_is_recorded_and_shown_to_the_model():
    def boom(expression: str) -> str:
        """Always fails."""
        raise RuntimeError("the abacus broke")

    def respond(messages):
        results = tool_results(messages)
        if not results:
            bad = AIMessage(
                content="",
                tool_calls=[
                    {"name": "boom", "args": {"expression": "1"}, "id": "a"},
                    {"name": "teleport", "args": {}, "id": "b"},
                ],
                invalid_tool_calls=[
                    {"name": "calculator", "args": "{oops", "id": "c", "error": "not JSON"}
                ],
            )
            return bad
        return "I could not compute it.\nAnswer: 0"

    model = ScriptedChatModel(respond=respond)
    turn = society(model, agents=1, tools=[boom, "calculator"]).run("?").turns[0]
    assert not turn.failed and turn.answer == "0"
    errors = [call.error for call in turn.tool_calls]
    assert errors[0] == "RuntimeError: the abacus broke"
    assert errors[1].startswith("no tool named 'teleport' (tools: boom, calculator)")
    assert errors[2] == "malformed call: not JSON"
    shown = tool_results(model.calls[1])
    assert shown[0] == "error: RuntimeError: the abacus broke" and len(shown) == 3


def test_the_call_limit_ends_the_calling_and_asks_for_an_answer():
    def greedy(messages):
        if "Answer now" in messages[-1].text:
            return f"Out of calls after {len(tool_results(messages))}.\nAnswer: 3"
        done = len(tool_results(messages))  # new arguments each time: none is a repeat
        return calls(
            ("calculator", {"expression": f"{done}+1"}), ("calculator", {"expression": f"{done}+2"})
        )

    model = ScriptedChatModel(respond=greedy)
    turn = society(model, agents=1, max_tool_calls=3).run("1 + 2?").turns[0]
    assert turn.answer == "3" and "after 4" in turn.text
    ran = [call for call in turn.tool_calls if call.error is None]
    assert len(ran) == 3 and turn.tool_calls[3].error == "not run: at most 3 calls"
    assert turn.usage.calls == 3  # two calling rounds, then the answer
    assert model.bound_tools == ["calculator"]


def test_a_second_malformed_call_ends_the_calling():
    def clumsy(messages):
        if "Answer now" in messages[-1].text:
            return "Fine.\nAnswer: 1"
        return AIMessage(
            content="",
            invalid_tool_calls=[{"name": "calculator", "args": "{", "id": "x", "error": "bad"}],
        )

    model = ScriptedChatModel(respond=clumsy)
    turn = society(model, agents=1).run("?").turns[0]
    assert turn.answer == "1" and len(turn.tool_calls) == 2
    assert all(call.error == "malformed call: bad" for call in turn.tool_calls)


def test_a_tool_that_hangs_gets_the_agents_time_limit_and_the_others_go_on():
    def sleepy(seconds: float) -> str:
        """Sleeps."""
        time.sleep(seconds)
        return "awake"

    def respond(messages, info):
        if info.agent == "a0" and not tool_results(messages):
            return calls(("sleepy", {"seconds": 5}))
        return "No tools needed.\nAnswer: 2"

    model = ScriptedChatModel(respond=respond)
    started = time.perf_counter()
    result = society(model, tools=[sleepy], timeout=0.5, retries=0).run("1 + 1?")
    assert time.perf_counter() - started < 4
    slow, quick = result.turns
    assert slow.failed and "within 0.5 s" in (slow.error or "")
    assert quick.answer == "2" and result.answer == "2"


def test_async_runs_call_tools_too():
    model = ScriptedChatModel(respond=multiplier)
    result = asyncio.run(society(model).arun("What is 1234 times 5678?"))
    assert result.answer == "7006652" and all(turn.tool_calls for turn in result.turns)


def test_a_model_that_cannot_call_tools_is_refused_before_any_call(embedded_model):
    agents = [moot.Agent(name="small", model=embedded_model, tools=["calculator"])]
    with pytest.raises(moot.ConfigError, match="cannot call tools"):
        moot.Society(agents=agents, protocol=moot.Debate(rounds=1)).run("1 + 1?")


@pytest.mark.parametrize(
    "tools, message",
    [
        (["abacus"], "unknown tool 'abacus'"),
        (["no_such_module:thing"], "cannot be imported"),
        ([lambda x: x], "needs a docstring"),
        (["calculator", "moot.tools:calculator"], "given twice: calculator"),
        ("calculator", "must be a list"),
    ],
)
def test_bad_tools_are_refused_with_what_is_wrong(tools, message):
    with pytest.raises(moot.ConfigError, match=message):
        moot.Agent(name="a", tools=tools)


def test_society_files_name_tools(tmp_path):
    path = tmp_path / "society.yaml"
    path.write_text(
        "agents:\n"
        "  - {name: a, model: test, tools: [calculator], max_tool_calls: 2}\n"
        "protocol: {kind: debate, rounds: 1}\n"
    )
    (agent,) = moot.load_society(path).agents
    assert [tool.name for tool in agent.tools] == ["calculator"] and agent.max_tool_calls == 2
    path.write_text(path.read_text().replace("[calculator]", "[abacus]"))
    with pytest.raises(moot.ConfigError, match=r"society.yaml:2: agents.0.tools: .*'abacus'"):
        moot.load_society(path)


def test_a_tool_choice_without_tools_is_an_error_everywhere(tmp_path, capsys):
    with pytest.raises(moot.ConfigError, match="tool_choice 'first' needs tools"):
        moot.Agent(name="a", tool_choice="first")
    path = tmp_path / "society.yaml"
    path.write_text(
        "agents:\n  - {name: a, model: test, tool_choice: reason-first}\n"
        "protocol: {kind: debate, rounds: 1}\n"
    )
    with pytest.raises(moot.ConfigError, match=r"society.yaml:2: agents.0: tool_choice"):
        moot.load_society(path)
    out = str(tmp_path / "out")
    debate = ["debate", "2+2?", "--model", "test", "--tool-choice", "first"]
    bench = ["bench", "--data", "arithmetic", "--model", "test", "--tool-choice", "first"]
    for command in (debate, [*bench, "--out", out]):
        assert main(command) == 2
        assert "needs tools" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_turns_with_tool_calls_are_checkpointed_and_shown(tmp_path, capsys):
    checkpoint = tmp_path / "runs.sqlite"
    model = ScriptedChatModel(respond=multiplier)
    society(model).run("1234 * 5678?", checkpoint=checkpoint, thread_id="t")
    assert main(["show", "--checkpoint", str(checkpoint), "--thread", "t", "--format", "json"]) == 0
    turns = json.loads(capsys.readouterr().out)["turns"]
    assert turns[0]["tool_calls"][0]["result"] == "7006652"
    assert main(["show", "--checkpoint", str(checkpoint), "--thread", "t"]) == 0
    assert "- tool `calculator(expression='1234*5678') -> 7006652`" in capsys.readouterr().out


def test_the_cli_gives_agents_tools(capsys):
    command = ["debate", "2+2?", "--model", "test", "--agents", "1", "--rounds", "1"]
    assert main([*command, "--tools", "calculator", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["turns"][0]["tool_calls"] == []  # it need not call
    assert main([*command, "--tools", "abacus"]) == 2
    assert "unknown tool 'abacus'" in capsys.readouterr().err


def test_bench_methods_get_tools_and_keep_them_apart_from_runs_without(tmp_path, capsys):
    bench = ["bench", "--data", "arithmetic", "--limit", "1", "--methods", "single", "--model"]
    out = str(tmp_path / "out")
    assert main([*bench, "test", "--out", out]) == 0
    assert (
        main([*bench, "test", "--out", out, "--tools", "calculator", "--tool-choice", "first"]) == 0
    )
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert ["tools=calculator tool_choice=first" in line["settings"] for line in lines] == [
        False,
        True,
    ]

    # Methods the tools would not reach are refused, not labelled "tools=calculator".
    other = str(tmp_path / "other")
    with_tools = ["--out", other, "--tools", "calculator"]
    assert main([*bench[:-2], "single,cascade-3,moa-2x1", "--model", "test", *with_tools]) == 2
    error = capsys.readouterr().err
    assert "cascade-3, moa-2x1 would run without them: run them in a bench of their own" in error
    assert not (tmp_path / "other").exists()


# -- llama.cpp models: the template's tool format, lenient parsing, a grammar for forced calls --


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_model_that_fails_after_a_tool_call_keeps_the_call_in_its_failed_turn(asynchronous):
    def fails_after_calling(messages):
        if not tool_results(messages):
            return calls(("calculator", {"expression": "6*7"}))
        raise ValueError("the server refused the conversation")

    failing = moot.Agent(
        name="a0", model=ScriptedChatModel(respond=fails_after_calling), tools=["calculator"]
    )
    healthy = moot.Agent(
        name="a1", model=ScriptedChatModel(respond=multiplier), tools=["calculator"]
    )
    team = moot.Society(agents=[failing, healthy], protocol=moot.Debate(rounds=1))
    result = asyncio.run(team.arun("q")) if asynchronous else team.run("q")
    failed, answered = result.turns
    assert failed.failed and "the server refused" in (failed.error or "")
    assert [(c.name, c.result) for c in failed.tool_calls] == [("calculator", "42")]
    assert answered.answer == "7006652"


def test_first_forces_the_first_call_only():
    model = ScriptedChatModel(respond=multiplier)
    turn = society(model, agents=1, tool_choice="first").run("1234 * 5678?").turns[0]
    assert turn.answer == "7006652"
    # The turn binds both ways; a forced call names the one tool (servers know that best).
    assert model.tool_choices[-2:] == [None, "calculator"]


def llama_tools(example=True, forced=False):
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from moot.models.llama_tools import LlamaTools
    from moot.tools import calculator

    spec = convert_to_openai_tool(calculator)
    worked = calculator.metadata["moot_example"] if example == "worked" else example
    return LlamaTools(ScriptedChatModel(respond=lambda m: "ok"), [spec], worked, forced)


def test_the_llama_prompt_is_in_the_hermes_format():
    from langchain_core.messages import SystemMessage

    conversation = [
        SystemMessage("You are careful."),
        HumanMessage("What is 6 * 7?"),
        calls(("calculator", {"expression": "6*7"}), ("calculator", {"expression": "7*6"})),
        ToolMessage("42", tool_call_id="call-0"),
        ToolMessage("42", tool_call_id="call-1"),
    ]
    system, question, call, results = llama_tools(example=False).prompt(conversation)
    assert system.text.startswith("You are careful.\n\n# Tools")
    assert '"name": "calculator"' in system.text and "<tools>" in system.text
    assert "For example" not in system.text  # no example for a big model
    assert question.text == "What is 6 * 7?"
    assert call.text.count("<tool_call>") == 2 and '"arguments": {"expression": "6*7"}' in call.text
    assert (
        results.type == "human" and results.text.count("<tool_response>\n42\n</tool_response>") == 2
    )
    shown = llama_tools(example=True).prompt(conversation)[0].text
    assert 'For example, to call a function named "calculator"' in shown
    worked = llama_tools(example="worked").prompt(conversation)
    assert worked[1].text.startswith("A library had 5210 books")  # a first exchange
    assert "<tool_call>" in worked[2].text and "3335" in worked[3].text
    assert worked[5].text == "What is 6 * 7?"


@pytest.mark.parametrize(
    "text, expected, invalid",
    [
        ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2*3"}}\n</tool_call>',
         [("calculator", {"expression": "2*3"})], 0),
        ('I will compute. {"name": "calculator", "arguments": {"expression": "2*3"}}',
         [("calculator", {"expression": "2*3"})], 0),  # bare JSON, as the 0.5B writes it
        ('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1+1\\"}"}'
         "</tool_call>", [("calculator", {"expression": "1+1"})], 0),  # arguments as a string
        ("<tool_call>{calculator: 2*3}</tool_call>", [], 1),
        ("The answer is 6.", [], 0),
        ('Data: {"name": "somebody", "age": 3}', [], 0),  # JSON naming no tool is no call
    ],
)  # fmt: skip
def test_llama_replies_are_read_leniently(text, expected, invalid):
    from moot.models.llama_tools import read_calls

    reply = read_calls(AIMessage(content=text), {"calculator"})
    assert [(call["name"], call["args"]) for call in reply.tool_calls] == expected
    assert len(reply.invalid_tool_calls) == invalid
    if expected:
        assert "calculator" not in reply.text  # the call is not left in the reply's text


def test_a_forced_call_follows_its_grammar_on_both_engines():
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from moot.models.embedded import embedded_model_path
    from moot.models.llama_tools import call_grammar
    from moot.tools import calculator

    grammar = call_grammar([convert_to_openai_tool(calculator)])
    for engine in ("simple", "batched"):
        model = moot.load_model(f"llama:{embedded_model_path()}", engine=engine)
        reply = model.invoke(
            "Compute six times seven.", grammar=grammar, max_tokens=60, temperature=0
        )
        # The grammar holds the call's shape (SmolLM2 alone would never write it); the
        # expression string may run to max_tokens.
        shape = (
            r'<tool_call>\n\{ ?"name" ?: ?"calculator" ?, ?"arguments" ?: ?\{ ?"expression" ?: ?"'
        )
        assert re.match(shape, reply.text), (engine, reply.text)


def reasoner(messages):
    """Reasons without calling, calls when made to, then answers with the result."""
    results = tool_results(messages)
    if results:
        return f"The calculator says {results[-1]}.\nAnswer: {results[-1]}"
    if messages[-1].text.startswith("Now check the step"):  # asked to check its reasoning
        return calls(("calculator", {"expression": "1234*5678"}))
    return "1234 times 5678 is about 7 million.\nAnswer: 7000000"


def test_reason_first_reasons_then_must_call_then_answers():
    model = ScriptedChatModel(respond=reasoner)
    turn = society(model, agents=1, tool_choice="reason-first").run("1234 * 5678?").turns[0]
    assert turn.answer == "7006652"
    assert turn.text.startswith("1234 times 5678 is about 7 million.")  # the reasoning is kept
    assert [(c.name, c.result) for c in turn.tool_calls] == [("calculator", "7006652")]
    assert turn.usage.calls == 3  # reasoning, the forced call, the answer
    assert model.tool_choices[-2:] == [None, "calculator"]  # offered freely, then forced
    # The forced step saw its reasoning, then the ask to check it with a tool.
    reasoning, ask = model.calls[1][-2:]
    assert isinstance(reasoning, AIMessage) and reasoning.text.startswith("1234 times 5678")
    assert ask.text == prompts.render("tools/check_with_tool")


def test_reason_first_that_calls_at_once_is_not_forced_again():
    model = ScriptedChatModel(respond=multiplier)
    turn = society(model, agents=1, tool_choice="reason-first").run("1234 * 5678?").turns[0]
    assert turn.answer == "7006652" and turn.usage.calls == 2 and len(turn.tool_calls) == 1


def test_no_tool_calls_allowed_means_no_tools_offered():
    model = ScriptedChatModel(respond=reasoner)
    for choice in ("first", "reason-first"):
        turn = society(model, agents=1, tool_choice=choice, max_tool_calls=0).run("q").turns[0]
        assert turn.answer == "7000000" and turn.usage.calls == 1 and not turn.tool_calls


def test_a_call_repeated_word_for_word_is_not_run_again_and_the_model_answers():
    def stuck(messages):
        if messages[-1].text.startswith("You have made all the tool calls"):
            return "Answer: 7006652"
        return calls(("calculator", {"expression": "1234*5678"}))  # again and again

    model = ScriptedChatModel(respond=stuck)
    turn = society(model, agents=1, max_tool_calls=4).run("1234 * 5678?").turns[0]
    first, again = turn.tool_calls
    assert (first.result, first.error) == ("7006652", None)
    assert again.result is None
    assert again.error == "not run again: the same call was made above and gave 7006652"
    assert turn.answer == "7006652" and turn.usage.calls == 3  # call, repeat, answer
    # The last ask shows the earlier result again and repeats how to state the answer.
    last = model.calls[-1]
    assert last[-2].text == f"error: {again.error}"
    assert last[-1].text.endswith(
        'End your reply with a line that starts with "Answer:" followed by the number.'
    )


def test_a_reply_with_no_answer_after_tools_is_asked_for_it_once():
    def thankful(messages):
        if not tool_results(messages):
            return calls(("calculator", {"expression": "1234*5678"}))
        if messages[-1].text.startswith("Your reply states no final answer"):
            return "Answer: 7006652"
        return "Thank you for using the tools."  # the tool result taken for a user's reply

    model = ScriptedChatModel(respond=thankful)
    turn = society(model, agents=1).run("1234 * 5678?").turns[0]
    assert turn.answer == "7006652" and turn.usage.calls == 3  # call, no answer, answer
    assert turn.text == "Thank you for using the tools.\n\nAnswer: 7006652"
    ask = model.calls[-1]
    assert ask[-2].text == "Thank you for using the tools."
    assert ask[-1].text.endswith(
        'End your reply with a line that starts with "Answer:" followed by the number.'
    )


def test_the_answer_is_asked_for_only_once_and_only_after_tools():
    def evasive(messages):
        if not tool_results(messages):
            return calls(("calculator", {"expression": "2+2"}))
        return "I would rather not say."

    model = ScriptedChatModel(respond=evasive)
    turn = society(model, agents=1).run("2 + 2?").turns[0]
    assert turn.answer is None and turn.usage.calls == 3  # call, no answer, asked once: none
    untooled = ScriptedChatModel(respond=lambda messages: "I would rather not say.")
    turn = society(untooled, agents=1).run("2 + 2?").turns[0]
    assert turn.answer is None and turn.usage.calls == 1  # no tool was called: not asked
