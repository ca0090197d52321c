"""`moot show` and `--html`: a run (from --json, a checkpoint) and a bench folder as Markdown,
HTML and JSON; the HTML page checked in headless Chromium (Debian's chromium, driven by
Playwright) for what a person sees."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import moot
from moot.cli import main
from moot.testing import ScriptedChatModel
from moot.viewer import live_html, load_record, render, runs_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def scripted_run(**options) -> moot.Result:
    """3 agents x 3 rounds: carol changes her mind in round 2, bob's call fails in round 3."""

    def respond(messages, info):
        if info.agent == "bob" and info.round == 3:
            raise RuntimeError("the server fell over")
        answer = "41" if info.agent == "carol" and info.round == 1 else "42"
        return f"{info.agent} works it out <b>carefully</b>.\nAnswer: {answer}"

    model = ScriptedChatModel(respond=respond)
    agents = [moot.Agent(name=name, model=model, retries=0) for name in ("alice", "bob", "carol")]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=3))
    return society.run("What is 12 + 30?", **options)


def test_markdown_has_each_round_its_answers_changes_failures_and_replies():
    text = render(scripted_run(), "md")
    assert text.startswith("# What is 12 + 30?")
    assert "**Final answer: 42**" in text
    assert text.count("## Round ") == 3
    assert "| carol | debater | 42 (changed) |" in text
    assert "| bob | debater | **failed** |" in text
    assert "> carol works it out <b>carefully</b>." in text
    assert "RuntimeError: the server fell over" in text


def test_html_is_one_self_contained_page_with_the_grid():
    page = render(scripted_run(), "html")
    assert page.count("<td class='turn") == 9
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "&lt;b&gt;carefully&lt;/b&gt;" in page  # replies are text, never markup
    assert page.count("class='turn changed'") == 1 and page.count("class='turn failed'") == 1


def test_a_checkpointed_run_shows_as_its_json_record_does(tmp_path, capsys):
    checkpoint = tmp_path / "runs.sqlite"
    result = scripted_run(checkpoint=checkpoint, thread_id="t1")
    shown = load_record(checkpoint=checkpoint, thread="t1")
    assert [t.text for t in shown.turns] == [t.text for t in result.turns]
    assert shown.answer == result.answer and shown.conformity == result.conformity
    assert main(["show", "--checkpoint", str(checkpoint), "--thread", "nope"]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_bad_records_are_one_error_line(tmp_path, capsys):
    garbage = tmp_path / "run.json"
    garbage.write_text('{"question": 3}')
    assert main(["show", str(garbage)]) == 2
    assert "is not a run record" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing.json")]) == 2
    assert main(["show", str(tmp_path)]) == 2  # a folder without results.jsonl
    assert "holds no benchmark results" in capsys.readouterr().err
    assert main(["show", str(garbage), "--format", "html", "-o", "/no/such/x.html"]) == 2


def test_cli_writes_the_page_after_a_run_and_shows_a_bench_folder(tmp_path, capsys):
    page, record = tmp_path / "run.html", tmp_path / "run.json"
    command = ["debate", "What is 12+30?", "--model", "test", "--agents", "2", "--rounds", "2"]
    assert main([*command, "--html", str(page), "--json"]) == 0
    record.write_text(capsys.readouterr().out)
    assert page.read_text().count("<td class='turn") == 4
    assert main(["show", str(record), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "42"
    out = tmp_path / "bench"
    bench = ["bench", "--data", "arithmetic", "--limit", "2", "--methods", "single,debate-2x2"]
    assert main([*bench, "--model", "test", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| question | reference | single | debate-2x2 |" in table and "**accuracy**" in table
    assert main(["show", str(out), "--format", "html", "-o", str(tmp_path / "bench.html")]) == 0
    bench_page = (tmp_path / "bench.html").read_text()
    assert bench_page.count("<details id='run-") == 4
    assert bench_page.count("<td class='turn") == 2 * 1 + 2 * 4  # single: 1 turn, 2x2: 4
    assert (
        "results.jsonl" in {p.name for p in out.iterdir()} and (out / "transcripts.jsonl").exists()
    )
    assert "agent1 in round 2" not in (out / "results.jsonl").read_text()  # texts stay out


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("the viewer tests need Chromium: `apt-get install chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_a_person_sees_the_grid_opens_a_reply_and_reads_the_answer(browser, tmp_path):
    page_file = tmp_path / "run.html"
    page_file.write_text(render(scripted_run(), "html"))
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(page_file.as_uri())
    cells = page.locator("#grid td.turn")
    assert cells.count() == 9  # 3 rounds x 3 agents
    assert page.locator("#final-answer").is_visible()
    assert page.locator("#final-answer").inner_text() == "final answer: 42"
    carol = page.locator("td.turn[data-agent='carol'][data-round='1']")
    reply = carol.locator("pre")
    assert not reply.is_visible()  # collapsed to its answer
    assert carol.locator(".answer").inner_text() == "41"
    carol.locator("summary").click()
    assert reply.is_visible() and "carol works it out <b>carefully</b>." in reply.inner_text()
    failed = page.locator("td.turn.failed")
    assert failed.count() == 1 and failed.get_attribute("data-agent") == "bob"
    red = failed.evaluate("cell => getComputedStyle(cell).backgroundColor")
    assert red == "rgb(253, 232, 232)"
    assert page.locator("td.turn.changed").get_attribute("data-agent") == "carol"
    assert page.locator("#agreement circle").count() == 3
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert (tmp_path / "viewer.png").stat().st_size > 10_000


def test_a_bench_page_links_each_cell_to_its_run(browser, tmp_path):
    out = tmp_path / "bench"
    bench = ["bench", "--data", "arithmetic", "--limit", "2", "--methods", "single,vote-3"]
    assert main([*bench, "--model", "test", "--out", str(out)]) == 0
    page_file = tmp_path / "bench.html"
    page_file.write_text(render(load_record(out), "html"))
    page = browser.new_page()
    page.goto(page_file.as_uri())
    page.locator("table.bench td a").nth(1).click()  # vote-3 on the first question
    opened = page.locator("details[id^='run-0-vote-3']").first
    opened.locator("summary").first.click()
    assert opened.locator("table.votes").is_visible()
    assert opened.locator("table.votes tr").count() == 2  # a header and round 1
    replies = opened.locator("table.replies td.turn")
    assert replies.count() == 3  # the three samples, each opening to its text
    replies.first.locator("summary").click()
    assert "in round 1: 40 + 2." in replies.first.locator("pre").inner_text()


def test_the_readme_screenshot_is_in_the_repository():
    shot = Path(__file__).parent.parent / "docs" / "viewer.png"
    assert shot.stat().st_size > 10_000
    assert "docs/viewer.png" in (shot.parent.parent / "README.md").read_text()


def test_the_live_page_is_the_grid_to_fill_and_escapes_what_it_is_given():
    hostile = "</script><script>alert(1)</script>"
    page = live_html(f"What is {hostile}?", ["alice", hostile], "/runs/x/events")
    assert page.count("<script>") == 1  # only its own
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert 'data-events="/runs/x/events"' in page and '<table id="grid">' in page
    assert "http://" not in page and "https://" not in page
    listed = runs_html([("/runs/a", hostile, "running")])
    assert "<script>" not in listed and "&lt;script&gt;" in listed


def test_a_page_that_cannot_be_written_loses_no_run(tmp_path, capsys, monkeypatch):
    command = ["debate", "What is 12+30?", "--model", "test", "--agents", "2", "--rounds", "1"]
    assert main([*command, "--html", str(tmp_path), "--json"]) == 2  # a folder: refused first
    captured = capsys.readouterr()
    assert "it is a folder" in captured.err and captured.out == ""

    def full_disk(out, text):
        raise moot.ConfigError(f"cannot write {out}: No space left on device")

    monkeypatch.setattr("moot.cli.show.write_page", full_disk)
    assert main([*command, "--html", str(tmp_path / "run.html"), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["answer"] == "42"  # printed before the page failed
    assert "No space left" in captured.err and "the run finished" in captured.err


def test_a_checkpointed_cascade_shows_its_tiers_as_the_run_did(tmp_path, capsys):
    checkpoint = str(tmp_path / "runs.sqlite")
    run = ["debate", "What is 17 + 25?", "--model", "test", "--checkpoint", checkpoint]
    assert main([*run, "--thread", "a", "--json"]) == 0  # the default for a number: a cascade
    printed = json.loads(capsys.readouterr().out)
    assert main(["show", "--checkpoint", checkpoint, "--thread", "a", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["details"]["tiers"]) == 3 and shown == printed
    assert main(["show", "--checkpoint", checkpoint, "--thread", "a"]) == 0
    assert "Vote: -" not in capsys.readouterr().out  # every tier's vote, not round 1's agents'


def test_showing_a_checkpointed_run_loads_no_model_and_imports_no_tool(tmp_path, capsys):
    checkpoint = str(tmp_path / "runs.sqlite")
    run = ["debate", "What is 17 + 25?", "--model", "test", "--checkpoint", checkpoint]
    assert main([*run, "--thread", "a", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    with sqlite3.connect(checkpoint) as connection:  # as if run on a model this machine lacks
        (text,) = connection.execute("SELECT spec FROM moot_runs").fetchone()
        stored = json.loads(text)
        stored["spec"]["models"] = {"model": {"spec": "llama:/no/such/model.gguf"}}
        stored["spec"]["agents"][0]["tools"] = ["no_such_module:tool"]
        connection.execute("UPDATE moot_runs SET spec = ?", (json.dumps(stored),))
    assert main(["show", "--checkpoint", checkpoint, "--thread", "a", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["details"] == printed["details"] and shown["answer_format"] == "number"
