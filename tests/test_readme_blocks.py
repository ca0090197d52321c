"""Every ```python block of README.md runs here (issue 42: the README is a contract).

The blocks are read and run by pytest-markdown-docs (its fence parser and its runner), driven
from this module so that they run in the usual `python -m pytest` and the rest of the suite is
collected as before (`--markdown-docs` would also collect every module's docstrings). The
plugin's fence options hold, as with `pytest --markdown-docs README.md`:
- `python notest`: not run (the README then says why, beside the block);
- `python continuation`: the previous block runs first, in the same namespace;
- `python fixture:NAME`: the fixture NAME of this module is the block's global NAME. These are
  the names the README lets a block use undefined: `model`, `agents` and `society` (the first
  example's, on the scripted test model), `agent`, `judge_agent`, `fuser_agent`, `q`, and
  `provider` (an OpenTelemetry TracerProvider). Two fixtures prepare instead of naming:
  `scripted_local` makes `moot.load_model("local")` the test model, and
  `small_and_large_gguf` puts the GGUF files the fusion example names (the embedded model)
  in the block's folder.
Every block may use `moot`, as if the first block's `import moot` had run.

Each block runs in a fresh folder (blocks write checkpoint and cache files); backends it
registers are forgotten after it; and its OpenAI key and base URL go nowhere: a block may build
an `openai:` model, and a call would fail at 127.0.0.1 instead of reaching the network.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import extract_fence_tests, get_runner

import moot
import moot.models
from moot.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

BLOCKS = list(
    extract_fence_tests(
        MarkdownIt("commonmark"),
        README.read_text(encoding="utf-8"),
        start_line_offset=0,
        source_path=README,
    )
)


def readme_reply(messages, info) -> str:
    """The test model's reply: 42 to anything, or the tower's height where a JSON Schema is
    asked for (the typed-answers example)."""
    if any("JSON Schema" in message.text for message in messages):
        return 'The tower is 330 m tall.\n{"value": 330, "unit": "m"}'
    return f"{info.agent} in round {info.round}: 40 + 2.\nAnswer: 42"


@pytest.fixture(autouse=True)
def block_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(moot.models, "BACKENDS", moot.models.BACKENDS.copy())  # register_backend
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    return tmp_path


@pytest.fixture
def model():
    return ScriptedChatModel(respond=readme_reply)


@pytest.fixture
def agents(model):
    return [
        moot.Agent(name=f"a{i}", role="debater", trait="easy-going", model=model) for i in range(3)
    ]


@pytest.fixture
def society(agents):
    return moot.Society(
        agents=agents,
        protocol=moot.Debate(rounds=2),
        aggregator=moot.MajorityVote(extract="number"),
    )


@pytest.fixture
def agent(agents):
    return agents[0]


@pytest.fixture
def judge_agent(model):
    return moot.Agent(name="judge", role="judge", model=model)


@pytest.fixture
def fuser_agent(model):
    return moot.Agent(name="fuser", role="fuser", model=model)


@pytest.fixture
def q():
    return "What is 17+25?"


@pytest.fixture
def provider():
    """A TracerProvider that keeps its spans; after the block, each agent turn must have made
    one LLM span, and the instrumentor the block switched on is switched off."""
    pytest.importorskip("openinference.instrumentation.langchain", reason="the 'tracing' extra")
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        LangChainInstrumentor().uninstrument()
    kinds = [
        span.attributes.get("openinference.span.kind") for span in exporter.get_finished_spans()
    ]
    assert kinds.count("LLM") == 6  # 3 agents x 2 rounds


@pytest.fixture
def scripted_local(monkeypatch, model):
    """`moot.load_model("local")` gives the test model (the first example and the relay): a
    debate on the embedded model takes seconds per call on two cores, and the README's first
    command already runs one (tests/test_readme_commands.py)."""
    load_model = moot.load_model

    def scripted(spec, **options):
        return model if spec == "local" else load_model(spec, **options)

    monkeypatch.setattr(moot, "load_model", scripted)


@pytest.fixture
def small_and_large_gguf(block_folder):
    from moot.models.embedded import embedded_model_path

    for name in ("small.gguf", "large.gguf"):
        (block_folder / name).symlink_to(embedded_model_path())


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{block.start_line}" for block in BLOCKS])
def test_readme_block_runs(block, request):
    names = {name: request.getfixturevalue(name) for name in block.fixture_names}
    runner = get_runner(block.runner_name)
    try:
        runner.runtest(block, {"__name__": "readme", "moot": moot, **names})
        return
    except Exception:
        # The plugin's report: the block, numbered as in README.md, and the traceback from it.
        report = runner.repr_failure(block, pytest.ExceptionInfo.from_current())
    pytest.fail(f"README.md, the block at line {block.start_line}:\n{report}", pytrace=False)


def test_the_readme_has_its_blocks():
    assert len(BLOCKS) >= 12
    assert [block.start_line for block in BLOCKS] == sorted({b.start_line for b in BLOCKS})


def test_the_relay_example_is_the_readmes():
    """The README's whole protocol and examples/relay.py define the same class, word for word."""
    example = (ROOT / "examples/relay.py").read_text(encoding="utf-8")
    block = next(block.source for block in BLOCKS if "class Relay(" in block.source)

    def relay_class(source: str) -> str:
        node = next(
            node for node in ast.parse(source).body
            if isinstance(node, ast.ClassDef) and node.name == "Relay"
        )  # fmt: skip
        return ast.get_source_segment(source, node) or ""

    assert relay_class(block) == relay_class(example)
