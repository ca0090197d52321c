"""Every command of README.md's ```bash blocks runs here (issue 42: the README is a contract).

The commands are read from the README itself, so a command added there is run here too, and a
command that breaks fails its test. Each runs in a fresh folder, in this process (`moot serve`
in a process of its own), and must exit with status 0 (`moot serve`, stopped with Ctrl-C: 130).
What a command needs is made there first: `examples/` (a link to the repository's), the files
it names (a tiny `mmlu.jsonl`, question/answer pairs, `my-society.yaml`; `merge.yaml` is the
README's own recipe, over tiny GGUFs; `small.gguf`, `large.gguf`, `a.gguf` and `b.gguf` are the
embedded model), and the commands in PREREQUISITES (`moot show run.json` needs the run that
wrote it).

How a README command becomes the one run here:
- `"..."` (any question) is "What is 12+30?"; `moot bench ...` (any benchmark) is a bench of
  two arithmetic questions; optional arguments in [brackets] are left out.
- Every command that calls models runs on the scripted test model (`--model test`, replacing
  the model it names, fused models included, or appended): what a model answers does not matter
  here, only that the command works. The same commands on the embedded model are tested
  elsewhere: `moot debate` in tests/test_cli.py, society files in tests/test_society_file.py,
  `fuse:` specs in tests/test_fusion.py. `moot fusion train-gate` takes GGUF files, not a
  model spec: it trains on two copies of the embedded model.
- A command that cannot run here is in SKIP, with the reason; a command that is neither run
  nor skipped (a new `pip ...` line, say) fails `test_every_readme_command_is_run_or_skipped`.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from moot.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUESTION = "What is 12+30?"
TINY_BENCH = ["--data", "arithmetic", "--limit", "2", "--methods", "single"]
"""What `moot bench ...` (the README's "any benchmark") stands for."""

SKIP = {
    # "On a new machine": setting up (the `moot debate` that ends its first line runs here).
    "python3 -m venv .venv": "creates the virtual environment these tests already run in",
    ". .venv/bin/activate": "activates the virtual environment these tests already run in",
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install -e '.[local]'": "installs (network, a build)",
    "pip install -e '.[dev]'": "installs (network)",
    # "Local models on a GPU": builds or installs llama-cpp-python for a GPU.
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native" pip install '
    "--no-cache-dir --force-reinstall --no-deps 'llama-cpp-python>=0.3.8,<0.4'": (
        "builds llama.cpp for CUDA (network, the CUDA toolkit, a GPU)"
    ),
    "pip install --no-cache-dir --force-reinstall --no-deps --only-binary llama-cpp-python "
    "'llama-cpp-python>=0.3.8,<0.4' --extra-index-url "
    "https://abetlen.github.io/llama-cpp-python/whl/cu124": "installs a CUDA wheel (network)",
    "python -m pytest": "the test suite itself",
    # Benchmarks on what only the project's machines have.
    "moot bench --data ../shared/data/gsm8k/dev.jsonl --limit 20 --methods single,debate-3x2 "
    "--model llama:$(../shared/models/bench-model.sh qwen0.5b) --out bench-out": (
        "the shared GSM8K data and benchmark models (../shared); the same command on the "
        "arithmetic task runs here"
    ),
    "moot bench --data chess.jsonl --backend ray --address auto --workers 8": (
        "needs a running Ray cluster (--address auto); tests/test_bench.py runs the Ray "
        "backend on a local Ray instance"
    ),
    'LANGSMITH_TRACING=true LANGSMITH_API_KEY=... moot debate "..."': (
        "sends the runs to LangSmith (network, an API key); tests/test_tracing.py runs it "
        "against a LangSmith-shaped server on 127.0.0.1"
    ),
    # Issue 40: servers that run until stopped, and services this machine does not have.
    "moot mcp --model openai:gpt-4o-mini --agents 3 --rounds 2": (
        "serves MCP over stdio until its client hangs up; tests/test_mcp_server.py drives the "
        "real process with the SDK's client"
    ),
    "moot mcp examples/societies/critic.yaml --http 8765": (
        "serves until stopped; tests/test_mcp_server.py starts it on a free port"
    ),
    'moot debate "What is 1234 * 5678?" --model openai:gpt-4o-mini --tools "mcp:python '
    'my_server.py"': ("names the reader's own MCP server; tests/test_mcp_tools.py runs a real one"),
    'moot debate "..." --model openai:gpt-4o-mini --tools calculator,mcp:http://127.0.0.1:8000/mcp '
    "--timeout 60": "needs the reader's MCP server on port 8000; tests/test_mcp_tools.py runs one",
    "LANGGRAPH_CLI_NO_ANALYTICS=1 langgraph dev --no-browser": (
        "serves until stopped; tests/test_langgraph_server.py starts it on a free port"
    ),
    'moot debate "..." --checkpoint postgresql://moot:PASSWORD@db.example:5432/moot --thread t1': (
        "needs a PostgreSQL server; tests/test_postgres.py starts one"
    ),
    "moot resume --checkpoint postgresql://moot:PASSWORD@db.example:5432/moot --thread t1": (
        "needs a PostgreSQL server; tests/test_postgres.py starts one"
    ),
    "PGPASSWORD=... moot resume --checkpoint postgresql://moot@db.example/moot --thread t1": (
        "needs a PostgreSQL server; tests/test_postgres.py starts one"
    ),
}
"""README commands (after `&&` is split and comments are cut) that do not run here, and why."""

PREREQUISITES = {
    "moot resume --checkpoint runs.sqlite --thread t1": [
        'moot debate "..." --checkpoint runs.sqlite --thread t1'
    ],
    "moot show run.json": ['moot debate "..." --json > run.json'],
    "moot show run.json --format html -o run.html": ['moot debate "..." --json > run.json'],
    "moot show --checkpoint runs.sqlite --thread t1 --format html -o run.html": [
        'moot debate "..." --checkpoint runs.sqlite --thread t1'
    ],
    "moot show bench-out --format html -o bench.html": [
        "moot bench --data arithmetic --limit 2 --methods single --out bench-out"
    ],
    "moot bench --out bench-out --report-only": [
        "moot bench --data arithmetic --limit 2 --methods single --out bench-out"
    ],
}
"""Commands that need what others make first, run before them in the same folder."""

MODEL_COMMANDS = {"debate", "run", "bench", "serve"}
"""Subcommands that call models, and so take `--model`."""


@dataclass(frozen=True)
class Command:
    line: int
    """Where it starts in README.md (1-based)."""
    text: str
    """As written, without its comment; continued lines joined."""


def split_outside_quotes(text: str) -> list[str]:
    """The commands of a shell line: split at `&&`, its comment (` #` outside quotes) cut."""
    parts, current, quote = [], "", ""
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (not current or current[-1].isspace()):
            break
        elif text.startswith("&&", index):
            parts.append(current)
            current, index = "", index + 2
            continue
        current += char
        index += 1
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def readme_commands() -> list[Command]:
    """Every command of the README's bash blocks, in order, each once."""
    seen: dict[str, Command] = {}
    for token in MarkdownIt("commonmark").parse(README.read_text(encoding="utf-8")):
        if token.type != "fence" or token.info.split()[:1] != ["bash"] or not token.map:
            continue
        start, logical = token.map[0] + 2, ""
        for number, line in enumerate(token.content.splitlines(), start=token.map[0] + 2):
            if not logical:
                start = number
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            for part in split_outside_quotes(logical + line):
                text = " ".join(part.split())
                seen.setdefault(text, Command(start, text))
            logical = ""
    return list(seen.values())


COMMANDS = readme_commands()


def readme_block_starting(prefix: str) -> str:
    """The README's YAML block whose first line starts with `prefix`."""
    for token in MarkdownIt("commonmark").parse(README.read_text(encoding="utf-8")):
        if (
            token.type == "fence"
            and token.info.strip() == "yaml"
            and token.content.startswith(prefix)
        ):
            return token.content
    raise AssertionError(f"README.md has no yaml block starting with {prefix!r}")


def argv_for(text: str) -> tuple[dict[str, str], list[str], str | None]:
    """The environment, arguments and stdout file of the command run for README `text`."""
    words = shlex.split(text)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[:1] == ["moot"], f"not a moot command, and not in SKIP: {text}"
    words = words[1:]
    stdout = None
    if ">" in words:
        at = words.index(">")
        stdout, words = words[at + 1], words[:at] + words[at + 2 :]
    argv: list[str] = []
    optional = False
    for word in words:
        if word.startswith("["):
            optional = True
        if not optional:
            argv.append(word)
        if word.endswith("]"):
            optional = False
    if "..." in argv:
        at = argv.index("...")
        argv[at : at + 1] = TINY_BENCH if argv[0] == "bench" else [QUESTION]
    if argv[0] in MODEL_COMMANDS and "--report-only" not in argv:
        if "--model" in argv:
            argv[argv.index("--model") + 1] = "test"
        else:
            argv += ["--model", "test"]
    return env, argv, stdout


# Files the README's commands name, made where a command names them.


def write_tiny_gguf(path: Path, seed: int) -> None:
    """A tiny llama-architecture GGUF with random tensors (as tests/test_merge.py writes)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(2)
    writer.add_name(f"tiny-{seed}")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    writer.add_bos_token_id(0)
    for name, shape in {
        "token_embd.weight": (8, 64),
        "blk.0.attn_q.weight": (16, 32),
        "blk.1.attn_q.weight": (16, 32),
        "output_norm.weight": (64,),
    }.items():
        values = rng.standard_normal(shape).astype(np.float32)
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def embedded_gguf(path: Path) -> None:
    from moot.models.embedded import embedded_model_path

    path.symlink_to(embedded_model_path())


def merge_recipe(path: Path) -> None:
    path.write_text(readme_block_starting("merge_method:"), encoding="utf-8")
    for seed, name in enumerate(("base.gguf", "math.gguf", "code.gguf")):
        write_tiny_gguf(path.parent / name, seed)


def jsonl(records: list[dict]):
    def write(path: Path) -> None:
        path.write_text("".join(json.dumps(record) + "\n" for record in records), "utf-8")

    return write


PAIRS = [(3, 4), (12, 30)]
FILES = {
    "merge.yaml": merge_recipe,
    "my-society.yaml": lambda path: shutil.copy(ROOT / "examples/societies/debate.yaml", path),
    "mmlu.jsonl": jsonl(
        [
            {"question": "Which is a prime?", "choices": ["4", "6", "7", "9"], "answer": "C"},
            {"question": "Which is even?", "choices": ["3", "8", "5", "1"], "answer": "B"},
        ]
    ),
    "pairs.jsonl": jsonl(
        [{"question": f"What is {a}+{b}?", "solution": f"{a}+{b} = {a + b}."} for a, b in PAIRS]
    ),
    "qa.jsonl": jsonl(
        [{"question": f"What is {a}+{b}?", "answer": f"{a}+{b} = {a + b}."} for a, b in PAIRS]
    ),
    "small.gguf": embedded_gguf,
    "large.gguf": embedded_gguf,
    "a.gguf": embedded_gguf,
    "b.gguf": embedded_gguf,
}


def prepare(folder: Path, texts: list[str]) -> None:
    (folder / "examples").symlink_to(ROOT / "examples")
    for name, make in FILES.items():
        if any(name in text for text in texts) and not (folder / name).exists():
            make(folder / name)


def run_in_process(text: str, folder: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    env, argv, stdout = argv_for(text)
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(sys, "stdin", io.StringIO("\n" * 20))  # --moderate: Enter, go on
        capsys.readouterr()
        try:
            status = main(argv)
        except SystemExit as exit:  # argparse: a usage error (2), or --help (0)
            status = exit.code if isinstance(exit.code, int) else 1
        out, err = capsys.readouterr()
    if stdout is not None:
        (folder / stdout).write_text(out, encoding="utf-8")
    return status, out, err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_server(text: str, folder: Path) -> tuple[int, str, str]:
    """`moot serve`: start it, ask it for its models, stop it with Ctrl-C (SIGINT), which the
    README says exits with status 130."""
    _, argv, _ = argv_for(text)
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "moot", *argv],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # slow on two busy cores
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    served = {model["id"] for model in json.load(r)["data"]}
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    out, err = process.communicate(timeout=10)
                    return process.returncode or -1, out, err
                time.sleep(0.1)
        names = {Path(word).stem for word in argv[1:] if word.endswith(".yaml")}
        assert served == names, served
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        return process.returncode, out, err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("command", COMMANDS, ids=[f"L{c.line}:{c.text[:50]}" for c in COMMANDS])
def test_readme_command_runs(command, tmp_path, monkeypatch, capsys):
    if command.text in SKIP:
        pytest.skip(SKIP[command.text])
    before = PREREQUISITES.get(command.text, [])
    prepare(tmp_path, [*before, command.text])
    monkeypatch.chdir(tmp_path)
    for text in before:
        status, out, err = run_in_process(text, tmp_path, monkeypatch, capsys)
        assert status == 0, f"{text} (made first) exited {status}:\n{out}\n{err}"
    expected = 0
    if argv_for(command.text)[1][0] == "serve":
        status, out, err = run_server(command.text, tmp_path)
        expected = 130  # stopped with Ctrl-C
    else:
        status, out, err = run_in_process(command.text, tmp_path, monkeypatch, capsys)
    assert status == expected, (
        f"README line {command.line}: {command.text} exited {status}:\n{out}\n{err}"
    )


def test_every_readme_command_is_run_or_skipped():
    """A README command is skipped only by name, and every name skipped is in the README."""
    texts = {command.text for command in COMMANDS}
    assert not set(SKIP) - texts, "SKIP names commands the README no longer has"
    assert not {text for text in PREREQUISITES if text not in texts}
    for command in COMMANDS:
        if command.text not in SKIP:
            argv_for(command.text)  # a moot command (others must be skipped, with a reason)
    assert len(COMMANDS) > 30  # the reader found the blocks


def test_the_model_help_names_every_model_spec_of_the_readme(capsys):
    """`moot debate --help` lists the spec kinds of the README's Models table (issue 42: it
    left out `hf:` and `fuse:`)."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line[:3] == "| `"]
    kinds = {row.split("`")[1].split(":")[0] for row in rows}
    assert kinds == {"local", "llama", "hf", "openai", "fuse", "test"}
    with pytest.raises(SystemExit):
        main(["debate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    model_help = help_text.split("--model MODEL", 1)[1].split(" -o ", 1)[0]
    for kind in kinds - {"local", "test"}:
        assert f"{kind}:" in model_help, kind
    assert "local" in model_help and "test" in model_help
