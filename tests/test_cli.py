"""The `moot` command. Most cases run `moot.cli.main` in-process (exit status, stdout, stderr);
one runs it as a user does, in a subprocess on the embedded model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

from moot import errors as moot_errors
from moot.cli import main


def moot(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.integration
def test_debate_json_on_the_embedded_model_in_a_subprocess():
    run = subprocess.run(
        [sys.executable, "-m", "moot.cli", "debate", "What is 12+30?", "--agents", "3",
         "--rounds", "2", "--max-tokens", "64", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["rounds"] == 2
    assert {(t["round"], t["agent"]) for t in result["turns"]} == {
        (r, f"agent{i}") for r in (1, 2) for i in (1, 2, 3)
    }
    for turn in result["turns"]:
        assert {"round", "agent", "role", "text", "answer"} <= set(turn)
        assert turn["text"] and turn["error"] is None
    usage = result["usage"]
    # Six turns; a turn whose reply stated no answer asked once more for its answer line.
    assert usage["calls"] == sum(turn["usage"]["calls"] for turn in result["turns"]) >= 6
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_debate_json_reports_every_turn_and_the_usage(capsys):
    status, out, _ = moot(capsys, "debate", "q", "--model", "test", "--agents", "2", "--json")
    assert status == 0
    result = json.loads(out)
    assert result["answer"] == "42" and result["rounds"] == 2
    assert [t["text"].split(":")[0] for t in result["turns"]] == [
        "agent1 in round 1", "agent2 in round 1", "agent1 in round 2", "agent2 in round 2",
    ]  # fmt: skip
    assert result["usage"]["calls"] == 4
    assert [stats["agreement"] for stats in result["conformity"]] == [1.0, 1.0]


def test_debate_live_view_prints_rounds_usage_and_answer(capsys):
    status, out, _ = moot(
        capsys, "debate", "What is 2+3?", "--model", "test", "--agents", "2", "--rounds", "2"
    )
    assert status == 0
    for expected in ("agent1 · round 1", "agent2 · round 2", "usage", "total", "final answer"):
        assert expected in out
    assert "42" in out.split("final answer")[1]


def test_models_lists_the_embedded_model_and_the_backends(capsys):
    status, out, _ = moot(capsys, "models")
    assert status == 0
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in out
    assert "llama:" in out and "openai:" in out and "test" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt5"], "unknown model spec 'gpt5'"),
        (["--model", "llama:/nowhere/model.gguf"], "GGUF file not found: /nowhere/model.gguf"),
        (["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        (["--agents", "0"], "argument --agents: must be at least 1, got 0"),
        (["--agents", "three"], "expected a whole number, got 'three'"),
        (["-o", "n_kontext=5"], "unknown llama option(s) n_kontext"),
        (["--model", "openai:gpt-4o-mini"], "needs OPENAI_API_KEY"),
        (["--extract", "roman"], "argument --extract: invalid choice: 'roman'"),
        (["--consensus", "1.5"], "consensus: Input should be less than or equal to 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, args, message, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    try:
        status, _, err = moot(capsys, "debate", "What is 1+1?", *args)
    except SystemExit as exit:  # argparse's own errors
        status, err = exit.code, capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_empty_question_is_refused(capsys):
    status, _, err = moot(capsys, "debate", "  ", "--model", "test")
    assert status == 2
    assert err.strip() == "error: the question is empty: give the text of the question to answer"


@pytest.mark.integration
def test_question_longer_than_the_context_is_refused_before_any_call(capsys):
    status, _, err = moot(capsys, "debate", "word " * 5000, "-o", "n_ctx=1024")
    assert status == 2
    assert "context window is 1024" in err
    assert len(err.strip().splitlines()) == 1


def test_every_call_failing_is_exit_code_1(capsys):
    from moot.models import BACKENDS, register_backend
    from moot.testing import ScriptedChatModel

    def broken(messages):
        raise ConnectionError("server went away")

    register_backend("broken", lambda rest, options: ScriptedChatModel(respond=broken), "")
    try:
        status, _, err = moot(capsys, "debate", "q", "--model", "broken:x", "--json")
    finally:
        BACKENDS.remove("broken")
    assert status == 1
    assert "every model call failed; the first error: ConnectionError: server went away" in err


def test_checkpointed_debate_resumes_from_the_cli(capsys, tmp_path):
    database = str(tmp_path / "runs.sqlite")
    args = ("What is 2+3?", "--model", "test", "--agents", "2", "--rounds", "2")
    status, first, _ = moot(capsys, "debate", *args, "--checkpoint", database, "--thread", "t1",
                            "--json")  # fmt: skip
    assert status == 0
    status, resumed, _ = moot(
        capsys, "resume", "--checkpoint", database, "--thread", "t1", "--json"
    )
    assert status == 0
    assert json.loads(resumed)["turns"] == json.loads(first)["turns"]
    status, shown, _ = moot(capsys, "resume", "--checkpoint", database, "--thread", "t1")
    assert status == 0 and "agent2 · round 2" in shown and "final answer" in shown
    status, _, err = moot(capsys, "resume", "--checkpoint", database, "--thread", "t2")
    assert status == 2 and "holds no run 't2'" in err
    status, _, err = moot(capsys, "resume", "--checkpoint", str(tmp_path / "no.sqlite"),
                          "--thread", "t1")  # fmt: skip
    assert status == 2 and "no checkpoint file" in err
    status, _, err = moot(capsys, "debate", *args, "--checkpoint", database)
    assert status == 2 and "--checkpoint needs --thread" in err


def test_moderator_stops_a_debate_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("stop\n"))
    status, out, _ = moot(capsys, "debate", "What is 2+3?", "--model", "test", "--agents", "2",
                          "--rounds", "3", "--moderate")  # fmt: skip
    assert status == 0
    assert "moderator after round 1 (agent1: 42, agent2: 42)" in out
    assert "stopped: moderator" in out
    assert "round 2" not in out


def test_run_takes_a_society_file_and_a_model(capsys, tmp_path):
    society = tmp_path / "pair.yaml"
    society.write_text("agents:\n  - {name: a, copies: 2}\nprotocol: {kind: debate, rounds: 1}\n")
    status, out, _ = moot(capsys, "run", str(society), "q", "--model", "test:Answer: 7", "--json")
    assert status == 0
    result = json.loads(out)
    assert result["answer"] == "7" and [t["agent"] for t in result["turns"]] == ["a1", "a2"]
    status, _, err = moot(capsys, "run", str(tmp_path / "none.yaml"), "q")
    assert status == 2 and "cannot read society file" in err


# -- hostile input: one `error:` line, exit status 2, nothing lost ----------------------------


def one_error_line(capsys, *args: str) -> str:
    try:
        status = main(list(args))
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_reused_thread_is_refused_unless_fresh(capsys, tmp_path):
    database = str(tmp_path / "r.sqlite")
    first = ("What is 12+30?", "--model", "test", "--agents", "2", "--rounds", "3")
    assert main(["debate", *first, "--checkpoint", database, "--thread", "t", "--json"]) == 0
    capsys.readouterr()
    second = ("What is 7+8?", "--model", "test:Answer: 15", "--agents", "2", "--rounds", "2")
    err = one_error_line(capsys, "debate", *second, "--checkpoint", database, "--thread", "t")
    assert "thread 't' in" in err and "already holds a run of 'What is 12+30?' (6 turns)" in err
    # The refused run changed nothing: the first run still resumes as it was.
    assert main(["resume", "--checkpoint", database, "--thread", "t", "--json"]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept["question"] == "What is 12+30?" and kept["usage"]["calls"] == 6
    args = ["debate", *second, "--checkpoint", database, "--thread", "t", "--fresh", "--json"]
    assert main(args) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["answer"] == "15" and fresh["rounds"] == 2 and fresh["usage"]["calls"] == 4
    assert {turn["text"] for turn in fresh["turns"]} == {"Answer: 15"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agents", "10000"], "--agents: a society takes at most 1,000 agents"),
        (["--rounds", "100000"], "rounds: Input should be less than or equal to 100"),
        (["-o", "max_tokens=0", "--model", "local"], "llama option max_tokens: Input should be"),
        (["-o", "n_ctx=-5", "--model", "local"], "llama option n_ctx: Input should be greater"),
        (["--max-tokens", "0"], "argument --max-tokens: must be at least 1"),
        (["--timeout", "-1"], "argument --timeout: must be a finite number of seconds above 0"),
        (["--retries", "-1"], "argument --retries: must be 0 or more"),
    ],
)
def test_absurd_numbers_are_refused(capsys, args, message):
    err = one_error_line(capsys, "debate", "q", "--model", "test", *args)
    assert message in err


def test_too_many_agents_with_the_default_program_agents_names_both(capsys):
    err = one_error_line(capsys, "debate", "What is 6*7?", "--model", "test", "--agents", "501")
    assert "--agents 501 and 501 program agents (--programs; a number question gets" in err


def test_bad_checkpoint_files_are_refused(capsys, tmp_path):
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database " * 100)
    for target, message in ((tmp_path, "is a folder"), (garbage, "is not a SQLite file")):
        for args in (
            ["debate", "q", "--model", "test", "--checkpoint", str(target), "--thread", "t"],
            ["resume", "--checkpoint", str(target), "--thread", "t"],
        ):
            assert message in one_error_line(capsys, *args)
    assert garbage.read_text().startswith("not a database")  # untouched
    missing = ["--checkpoint", str(tmp_path / "no" / "runs.sqlite"), "--thread", "t"]
    err = one_error_line(capsys, "debate", "q", "--model", "test", *missing)
    assert f"the folder {tmp_path / 'no'} does not exist" in err


def test_files_that_are_not_utf8_are_refused(capsys, tmp_path):
    society = tmp_path / "latin1.yaml"
    society.write_bytes("agents:\n  - {name: caf\xe9}\n".encode("latin-1"))
    err = one_error_line(capsys, "run", str(society), "q")
    assert f"society file {society} is not UTF-8 text (byte 0xe9" in err
    data = tmp_path / "latin1.jsonl"
    data.write_bytes('{"question": "caf\xe9?", "answer": "1"}\n'.encode("latin-1"))
    err = one_error_line(capsys, "bench", "--data", str(data), "--out", str(tmp_path / "o"))
    assert f"data file {data} is not UTF-8 text" in err


def test_serve_refuses_a_bad_or_taken_port(capsys, tmp_path):
    import socket

    society = tmp_path / "pair.yaml"
    society.write_text("agents:\n  - {name: a, copies: 2}\n")
    assert "a port is 1 to 65535, got 99999" in one_error_line(
        capsys, "serve", str(society), "--port", "99999"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        err = one_error_line(capsys, "serve", str(society), "--port", port, "--model", "test")
    assert f"cannot listen on 127.0.0.1:{port}" in err and "serving" not in err


def test_a_model_that_hangs_is_cut_off_by_the_timeout(capsys):
    started = time.monotonic()
    status = main(["debate", "q", "--model", "test", "-o", "delay=30", "--timeout", "0.2",
                   "--rounds", "1", "--json"])  # fmt: skip
    assert time.monotonic() - started < 10
    captured = capsys.readouterr()
    assert status == 1  # every call failed
    turns = json.loads(captured.out)["turns"]
    assert all("did not answer within 0.2 s" in turn["error"] for turn in turns)


def test_a_topology_that_shows_an_agent_itself_is_refused(tmp_path, capsys):
    society = tmp_path / "mirror.yaml"
    society.write_text(
        "agents:\n  - {name: a}\n  - {name: b}\n"
        "protocol: {kind: debate, topology: {a: [a, b], b: [a]}}\n"
    )
    err = one_error_line(capsys, "run", str(society), "q", "--model", "test")
    assert "the topology shows a their own answer" in err


def test_python_dash_m_moot_is_the_moot_command():
    done = subprocess.run(
        [sys.executable, "-m", "moot", "models"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "llama:/path/to/model.gguf" in done.stdout.replace("\n", "")


def test_debate_flags_set_each_setting_of_the_society(capsys, tmp_path):
    from moot.aggregate.crosscheck import CrossCheckVote
    from moot.checkpoints import recall_run

    database = str(tmp_path / "runs.sqlite")
    flags = ("--programs", "2", "--update", "keep", "--anonymous", "--peers-shown", "1",
             "--decide", "crosscheck", "--seed", "5")  # fmt: skip
    status, out, _ = moot(capsys, "debate", "What is 2+3?", "--model", "test", "--agents", "2",
                          *flags, "--checkpoint", database, "--thread", "t", "--json")  # fmt: skip
    assert status == 0
    result = json.loads(out)
    assert {turn["agent"] for turn in result["turns"]} == {
        "agent1",
        "agent2",
        "program1",
        "program2",
    }
    from moot.spec import SocietySpec

    spec = SocietySpec.model_validate(recall_run(database, "t")["spec"])
    debate = spec.protocol
    assert (debate.update_style, debate.anonymous, debate.peers_shown) == ("keep", True, 1)
    assert isinstance(spec.aggregator, CrossCheckVote)
    assert [(agent.kind, agent.seed) for agent in spec.agents] == [
        ("text", 5), ("text", 6), ("program", 5), ("program", 6)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--programs", "-1"], "argument --programs: must be 0 or more"),
        (["--programs", "1", "--prompts", "du-gsm8k"], "use --prompts moot"),
        (["--programs", "100000"], "a society takes at most"),
        (["--decide", "loudest"], "argument --decide: invalid choice: 'loudest'"),
        (["--peers-shown", "0"], "argument --peers-shown: must be at least 1, got 0"),
    ],
)
def test_bad_debate_settings_are_one_line_and_exit_code_2(capsys, args, message):
    try:
        status, _, err = moot(capsys, "debate", "What is 1+1?", "--model", "test", *args)
    except SystemExit as exit:  # argparse's own errors
        status, err = exit.code, capsys.readouterr().err
    assert status == 2
    assert message in err and "Traceback" not in err


def test_tools_go_to_text_agents_and_keep_needs_moots_prompts():
    from moot.cli.run import debate_spec

    settings = {"command": "debate", "agents": 2, "rounds": 1, "model": "test", "programs": 1,
                "tools": ["calculator"], "tool_choice": "first"}  # fmt: skip
    spec = debate_spec(settings)
    tools = [[tool.name for tool in agent.tools] for agent in spec.agents]
    assert tools == [["calculator"], ["calculator"], []]
    assert [agent.tool_choice for agent in spec.agents] == ["first", "first", "auto"]
    with pytest.raises(moot_errors.ConfigError, match="--update keep: .*use --prompts moot"):
        debate_spec({**settings, "programs": 0, "update": "keep", "prompts": "du-gsm8k"})


def test_a_number_question_gets_text_and_program_agents_unless_a_flag_shapes_it(capsys):
    number = ("What is 6*7?", "--model", "test", "--json")
    status, out, _ = moot(capsys, "debate", *number)
    result = json.loads(out)
    # Two at a time until two agree: the test model writes no program, so every pair is asked.
    assert status == 0 and [tier["agents"] for tier in result["details"]["tiers"]] == [
        ["agent1", "program1"], ["agent2", "program2"], ["agent3", "program3"]
    ]  # fmt: skip
    status, out, _ = moot(capsys, "debate", *number[:3])  # says what it runs, and why
    assert (
        "answer two at a time until two agree, and vote over every answer given: moot's "
        "default" in " ".join(out.split())
    )
    status, out, _ = moot(capsys, "debate", *number, "--rounds", "2")  # the text debate
    result = json.loads(out)
    assert result["rounds"] == 2 and {turn["agent"] for turn in result["turns"]} == {
        "agent1", "agent2", "agent3"
    }  # fmt: skip
    status, out, _ = moot(capsys, "debate", "What is the capital of France?", "--model", "test",
                          "--json")  # fmt: skip
    assert json.loads(out)["rounds"] == 2


def test_a_choice_question_gets_the_vote_of_first_answers_unless_a_flag_shapes_it(capsys):
    choice = ("Which is a gas?\nA) iron\nB) helium\nC) salt", "--model", "test", "--json")
    status, out, _ = moot(capsys, "debate", *choice)
    result = json.loads(out)
    assert status == 0 and result["rounds"] == 1
    assert [turn["agent"] for turn in result["turns"]] == ["agent1", "agent2", "agent3"]
    status, out, _ = moot(capsys, "debate", *choice[:3])  # says what it runs, and why
    assert status == 0 and "3 text agents answer once and vote" in out
    assert "--rounds 2 debates" in out and "round 2" not in out
    status, out, _ = moot(capsys, "debate", *choice, "--anonymous")
    assert json.loads(out)["rounds"] == 2
    status, out, _ = moot(capsys, "debate", *choice, "--prompts", "du-mmlu")
    assert json.loads(out)["rounds"] == 2  # Du's prompts: their debate


def test_stop_early_answers_in_pairs_of_text_and_program_until_a_pair_agrees(capsys):
    status, out, _ = moot(capsys, "debate", "What is 6*7?", "--model", "test", "--stop-early")
    assert status == 0 and "3 program agents answer two at a time until two agree" in out
    status, out, _ = moot(capsys, "debate", "What is 6*7?", "--model", "test", "--stop-early",
                          "--json")  # fmt: skip
    result = json.loads(out)
    tiers = [tier["agents"] for tier in result["details"]["tiers"]]
    # The test model writes no program, so no pair agrees and every pair is asked.
    assert tiers == [["agent1", "program1"], ["agent2", "program2"], ["agent3", "program3"]]
    assert result["answer"] == "42" and result["stop_reason"] == "rounds"
    status, out, _ = moot(capsys, "debate", "What is the capital of France?", "--model", "test",
                          "--stop-early", "--json")  # fmt: skip
    result = json.loads(out)  # text agents only: the first two agree
    assert result["stop_reason"] == "confident" and len(result["turns"]) == 2


def test_a_moderator_for_a_society_without_rounds_is_refused_before_the_thread_is_taken(
    capsys, tmp_path
):
    checkpoint = str(tmp_path / "runs.sqlite")
    held = ["--checkpoint", checkpoint, "--thread", "t"]
    assert main(["debate", "What is 6*7?", "--model", "test", "--rounds", "2", *held]) == 0
    capsys.readouterr()
    cascade = tmp_path / "cascade.yaml"
    cascade.write_text(
        "agents:\n  - {name: a, copies: 2, model: test}\n"
        "protocol: {kind: cascade, tiers: [[a1, a2]]}\n"
    )
    err = one_error_line(capsys, "run", str(cascade), "What is 6*7?", *held, "--fresh",
                         "--moderate")  # fmt: skip
    assert "this society's Cascade has none: leave out --moderate" in err
    assert main(["show", "--checkpoint", checkpoint, "--thread", "t", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rounds"] == 2  # still the debate's, readable


@pytest.mark.parametrize("flags", [("--rounds", "1"), ("--decide", "vote")])
def test_stop_early_keeps_its_program_agents_beside_flags_it_implies(capsys, flags):
    status, out, _ = moot(capsys, "debate", "What is 6*7?", "--model", "test", "--stop-early",
                          *flags, "--json")  # fmt: skip
    agents = {turn["agent"] for turn in json.loads(out)["turns"]}
    assert status == 0 and {"program1", "program2", "program3"} <= agents


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--rounds", "2"), "answers once and votes, not a debate: leave out --rounds 2"),
        (("--anonymous",), "leave out --anonymous"),
        (("--decide", "select"), "decides by the vote of every answer given"),
        (("--agents", "1", "--programs", "0"), "needs two agents at least"),
        (("--prompts", "du-gsm8k"), "asks in moot's prompts"),
        (("--moderate",), "--moderate pauses between debate rounds"),
    ],
)
def test_stop_early_refuses_what_it_would_ignore(capsys, flags, says):
    status, _, err = moot(capsys, "debate", "What is 6*7?", "--model", "test", "--stop-early",
                          *flags)  # fmt: skip
    assert status == 2 and says in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "texts", "programs", "rounds"),
    [
        ((), 3, 3, 3),  # in pairs: the test model writes no program, so all 3 pairs are asked
        (("--agents", "5"), 5, 5, 5),  # as many program agents as text agents
        (("--rounds", "1", "--programs", "3"), 3, 3, 1),  # all six at once
        (("--programs", "0"), 3, 0, 2),  # any flag that shapes a debate: the text debate's rest
        (("--programs", "2"), 3, 2, 2),
        (("--decide", "vote"), 3, 0, 2),
        (("--update", "keep"), 3, 0, 2),
        (("--anonymous",), 3, 0, 2),
        (("--consensus", "1.0"), 3, 0, 1),  # the test model's agents agree: stopped at 1
        (("--prompts", "du-gsm8k"), 3, 0, 2),  # program agents need moot's prompts
    ],
)
def test_which_flags_turn_a_numeric_question_into_the_text_debate(
    capsys, flags, texts, programs, rounds
):
    status, out, _ = moot(capsys, "debate", "What is 6*7?", "--model", "test", *flags, "--json")
    result = json.loads(out)
    agents = {turn["agent"] for turn in result["turns"]}
    assert status == 0 and result["rounds"] == rounds
    assert len({a for a in agents if a.startswith("agent")}) == texts
    assert len({a for a in agents if a.startswith("program")}) == programs


def test_version_is_printed(capsys):
    from importlib.metadata import version

    from moot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"moot {version('moot')}\n"
