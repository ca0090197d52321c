"""The program sandbox against hostile programs, and program agents inside a debate.

Each hostile program must be stopped within its limits and become that agent's failed turn;
the sandbox never raises for what a program does."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

import moot
from moot.testing import ScriptedChatModel
from moot.tools.program import program_of
from moot.tools.sandbox import SandboxLimits, run_python

QUICK = SandboxLimits(cpu_seconds=2, wall_seconds=5)


def test_a_program_prints_its_answer_with_the_allowed_modules() -> None:
    program = (
        "import math, fractions, collections\n"
        "counts = collections.Counter('abca')\n"
        "counts['a'] += 10\n"
        "def show(x):\n"
        "    print('value', x)\n"
        "show(math.factorial(5) + fractions.Fraction(1, 2))\n"
        "print(counts['a'])\n"
    )
    run = run_python(program)
    assert run.error is None
    assert run.output == "value 241/2\n12\n"


HOSTILE = {
    "endless loop": "while True:\n    pass",
    "memory hog": "blocks = []\nwhile True:\n    blocks.append('x' * 10**7)",
    "one huge list": "x = [0] * (10**9)",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned'])",
    "ctypes": "import ctypes\nctypes.CDLL(None).system(b'echo pwned')",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 22))",
    "environment": "import os\nprint(os.environ)",
    "open a file": "print(open('/etc/hostname').read())",
    "write to home": "open(__import__('os').path.expanduser('~/pwned'), 'w').write('x')",
    "builtins escape": "print(().__class__.__base__.__subclasses__())",
    "frame escape": "g = (x for x in [1])\nprint(g.gi_frame.f_globals)",
    "module escape": "import statistics\nprint(statistics.sys.modules['os'].environ)",
    "format escape": "print('{0.__class__}'.format(1))",
    "f-string escape": "print(f'{().__class__}')",
    "attrgetter escape": (
        "import operator\nprint(operator.attrgetter('__class__.__base__.__subclasses__')(())())"
    ),
    "methodcaller escape": (
        "import operator\nprint(operator.methodcaller('__subclasses__')(object))"
    ),
    "formatter escape": "import string\nprint(string.Formatter().format('{0.__class__}', 1))",
    # Found in review: functools reads and writes attributes named by strings.
    "update_wrapper escape": (
        "import functools\n"
        "def peek(obj, name):\n"
        "    class Box:\n"
        "        pass\n"
        "    reader = functools.cached_property(len)\n"
        "    reader.attrname = name\n"
        "    Box.value = reader\n"
        "    box = Box()\n"
        "    functools.update_wrapper(box, obj, assigned=(name,), updated=())\n"
        "    return box.value\n"
        "print(peek(len, '__self__').open('/etc/hostname').read())\n"
    ),
    "singledispatch eval": (
        "import functools\n"
        "box = []\n"
        "def f(x: \"box.append(len.__self__.open('/etc/hostname').read()) or int\"):\n"
        "    return x\n"
        "functools.singledispatch(len).register(f)\n"
        "print(box)\n"
    ),
    "submodule fallback": "from collections import abc\nprint(abc)",
    "exec": "exec('import os')",
    "eval": "print(eval('1+1'))",
    "huge output": "while True:\n    print('x' * 1000)",
    "huge integer": "print(10 ** (10 ** 9))",
    "deep recursion": "def f(n):\n    return f(n + 1)\nf(0)",
    "not python": "this is not a program",
    "exits early": "raise SystemExit(3)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_program_is_stopped_within_its_limits(name: str) -> None:
    marker = Path.home() / "pwned"
    started = time.monotonic()
    run = run_python(HOSTILE[name], QUICK)
    took = time.monotonic() - started
    assert took < QUICK.wall_seconds + 3, f"{name} ran {took:.1f} s"
    assert "pwned" not in run.output
    assert not marker.exists()
    assert os.environ.get("HOME", "/") not in run.output or name == "huge output"
    if name == "exits early":
        assert run.error is None and run.output == ""
    else:
        assert run.failed, f"{name} was not stopped: {run.output[:100]!r}"
    assert len(run.output) <= QUICK.output_chars


def test_a_secret_in_the_environment_is_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOOT_TEST_SECRET", "hunter2")
    for program in (
        "import os\nprint(os.environ['MOOT_TEST_SECRET'])",
        "import os\nprint(os.getenv('MOOT_TEST_SECRET'))",
        "print(__import__('os').environ)",
    ):
        run = run_python(program, QUICK)
        assert "hunter2" not in run.output and "hunter2" not in (run.error or "")


def test_the_program_runs_in_a_temporary_folder_that_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recorded(*args, **kwargs):
        made.append(Path(mkdtemp(*args, **kwargs)))
        return str(made[-1])

    # under tmp_path, not /tmp: other processes on the machine run programs too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    assert run_python("print(1)", QUICK).output == "1\n"
    assert len(made) == 1 and made[0].parent == tmp_path and made[0].name.startswith("moot-")
    assert list(tmp_path.iterdir()) == []


def test_a_program_over_the_size_limit_is_refused_unrun() -> None:
    run = run_python("print(1)\n" * 10, SandboxLimits(program_chars=20))
    assert run.error is not None and "over 20 characters" in run.error


def test_the_program_is_read_from_the_reply() -> None:
    assert program_of("Here:\n```python\nprint(2)\n```\nAnswer: 2") == "print(2)\n"
    assert program_of("```\nprint(3)\n```") == "print(3)\n"
    assert program_of("```text\nnotes\n```\n```py\nprint(4)\n```") == "print(4)\n"
    assert program_of("No code here. Answer: 5") is None
    assert program_of("```python\nprint(6)") == "print(6)"  # cut off by max_tokens


def _scripted(replies: list[str]) -> ScriptedChatModel:
    script = iter(replies)
    return ScriptedChatModel(respond=lambda messages: next(script))


def test_a_program_agent_answers_with_what_its_program_printed() -> None:
    reply = "Compute it.\n```python\nprint(17 + 25)\n```\nAnswer: 41"
    agent = moot.Agent(name="p", kind="program", model=_scripted([reply]))
    result = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("What is 17+25?")
    turn = result.turns[0]
    assert turn.answer == "42" and result.answer == "42"
    assert "Output:" in turn.text and turn.text.endswith("Answer: 42")
    assert turn.usage.output_tokens > 0


@pytest.mark.parametrize("name", ["fork bomb", "memory hog", "endless loop", "socket"])
async def test_a_hostile_program_fails_its_turn_and_the_debate_goes_on(name: str) -> None:
    hostile = f"```python\n{HOSTILE[name]}\n```"
    programmer = moot.Agent(
        name="p", kind="program", model=_scripted([hostile, "```python\nprint(42)\n```"])
    )
    talker = moot.Agent(name="t", model=_scripted(["Answer: 41", "Answer: 42"]))
    society = moot.Society(agents=[programmer, talker], protocol=moot.Debate(rounds=2))
    result = await society.arun("What is 17+25?")
    first = result.turns[0]
    assert first.agent == "p" and first.failed and "program" in (first.error or "")
    assert first.text.startswith("```python")  # the reply is kept, and what it cost
    assert first.usage.calls == 1 and first.usage.output_tokens > 0
    assert [turn.answer for turn in result.turns if turn.round == 2] == ["42", "42"]
    assert result.answer == "42"


def test_a_reply_without_a_program_fails_the_turn_naming_why() -> None:
    agent = moot.Agent(name="p", kind="program", model=_scripted(["I think 42.\nAnswer: 42"]))
    result = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("What is 17+25?")
    assert result.turns[0].error == "ProgramError: the reply has no program (a ```python block)"
    assert result.answer is None


def test_a_program_agent_is_asked_for_a_program() -> None:
    seen: list[str] = []

    def respond(messages: list[Any]) -> str:
        seen.append("\n".join(str(message.content) for message in messages))
        return "```python\nprint(42)\n```"

    agent = moot.Agent(name="p", kind="program", model=ScriptedChatModel(respond=respond))
    moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("What is 17+25?")
    assert "Python program" in seen[0] and "prints" in seen[0]


def test_the_parent_holds_a_bounded_amount_of_what_the_child_writes() -> None:
    floods = {
        # CPython itself writes to stderr for each generator that swallows GeneratorExit
        "stderr": (
            "def stubborn():\n"
            "    while True:\n"
            "        try:\n"
            "            yield 1\n"
            "        except GeneratorExit:\n"
            "            pass\n"
            "while True:\n"
            "    g = stubborn()\n"
            "    next(g)\n"
        ),
        "re.DEBUG": "import re\nwhile True:\n    re.compile('a' * 5000, re.DEBUG)\n    re.purge()",
    }
    for name, program in floods.items():
        run = run_python(program, SandboxLimits(cpu_seconds=1, wall_seconds=3))
        assert run.failed, name
        assert len(run.output) <= QUICK.output_chars and len(run.error or "") <= 2000, name


def test_common_program_habits_work() -> None:
    program = (
        "import datetime, random, decimal, statistics, functools\n"
        "print(statistics.mean([1, 2, 3]), flush=True)\n"
        "print(decimal.Decimal('1.10') + decimal.Decimal('2.20'))\n"
        "print(functools.reduce(lambda a, b: a * b, [1, 2, 3, 4]))\n"
        "print(datetime.date(2024, 3, 1) - datetime.date(2024, 2, 1))\n"
    )
    run = run_python(program)
    assert run.error is None, run.error
    assert run.output.splitlines() == ["2", "3.30", "24", "29 days, 0:00:00"]


def test_text_that_does_not_encode_is_an_error_or_replaced_never_a_crash() -> None:
    assert run_python("print('\ud800')").failed  # a lone surrogate in the program
    run = run_python("print(chr(0xD800))")
    run.model_dump_json()  # what it printed can be saved
    assert run.error is None and run.output.strip() == "?"
