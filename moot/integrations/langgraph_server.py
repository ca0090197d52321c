"""Societies on LangGraph Server (`langgraph dev`, LangSmith Deployment): a graph per society.

A society's graph reads its live models from the run's context (`RunContext`), which no HTTP
request can carry. `served_graph` therefore compiles the protocol's own graph, node for node,
into a `SocietyGraph`, which builds that context on the server as each run starts: for the
question in the input (or, for a run that continues a thread, the question in its state),
checked as `Society.run` checks it. The server streams each node's update (an agent's turn, a
round's end) and Studio draws the protocol's nodes, as for any graph.

A thread holds one question's run at a time: a new question on a thread starts its state over
(its earlier runs stay in the thread's history), as a society's turns would pile up otherwise.
`langgraph_files` writes the `langgraph.json` and the graph module that serve society files
(`moot langgraph`).
"""

from __future__ import annotations

import asyncio
import json
import keyword
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast, get_origin, get_type_hints

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Overwrite
from pydantic import BaseModel, Field, create_model

from moot.errors import ConfigError
from moot.graphs.helpers import valid_text
from moot.graphs.types import RunContext
from moot.society import Society
from moot.society_file import SocietyFile, load_society

MAX_QUESTION = 1 << 20
"""The longest question a served society takes, in characters (1 MiB of text, as `moot serve`
takes): a longer one is a run error, not a run."""

GRAPHS_MODULE = "moot_graphs.py"
"""The graph module `langgraph_files` writes beside `langgraph.json`."""

OFFLINE_ENV = {"LANGGRAPH_NO_VERSION_CHECK": "true", "LANGSMITH_TRACING": "false"}
"""What `langgraph.json` sets so that the server reaches no network: no check for a newer
version on PyPI, no traces sent to LangSmith."""


class SocietyInput(BaseModel):
    """What a run of a served society takes (its input schema, shown by Studio)."""

    question: str = Field(description="The question the society answers.")


class SocietyGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A society's compiled protocol graph that makes each run's context itself, so that
    LangGraph Server can run it (`served_graph` makes one). It runs async only (`ainvoke`,
    `astream`), as the server does."""

    def __init__(self, *, society: Society, max_question: int = MAX_QUESTION, **parts: Any):
        # LangGraph copies a graph through its constructor (the server does, for every run);
        # it would drop the allowlist of checkpointed types, which strict checkpoints need.
        allowlist = parts.pop("_serde_allowlist", None)
        super().__init__(**parts)
        self._serde_allowlist = allowlist
        self.society = society
        """The society whose runs this graph makes."""
        self.max_question = max_question
        """The longest question taken, in characters."""

    async def astream(  # type: ignore[override]
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """LangGraph's `astream`, with the run's context made here. A context sent over HTTP is
        ignored; a `RunContext` passed in-process is used as it is."""
        if input is None or isinstance(input, Command):  # the thread's run goes on
            question = await self._held_question(config)
        else:
            question = self._question(input)
            input = {**self._fresh_state(), "question": question}
        if not isinstance(context, RunContext):
            # Loading models reads files: not on the server's event loop.
            context = await asyncio.to_thread(self._context, question)
        config = self._limited(config)
        async for part in super().astream(input, config, context=context, **kwargs):
            yield part

    def _question(self, input: Any) -> str:
        """The question of a new run's input, or the error that refuses it."""
        if not isinstance(input, Mapping) or "question" not in input:
            got = (
                f"keys {sorted(map(str, input))}"
                if isinstance(input, Mapping)
                else f"a {type(input).__name__}"
            )
            raise ConfigError(
                f'a society\'s run takes {{"question": "..."}} as its input; got {got}'
            )
        question = input["question"]
        if not isinstance(question, str):
            raise ConfigError(
                f"the question must be a string of text; got {type(question).__name__}"
            )
        if len(question) > self.max_question:
            raise ConfigError(
                f"the question is {len(question):,} characters, over this server's limit of "
                f"{self.max_question:,}: shorten it"
            )
        return valid_text(question)

    def _fresh_state(self) -> dict[str, Any]:
        """Writes that clear every key of the state: lists emptied (past their reducers), the
        rest None."""
        hints = get_type_hints(self.builder.state_schema)
        return {
            key: Overwrite([]) if get_origin(hint) is list else None for key, hint in hints.items()
        }

    async def _held_question(self, config: RunnableConfig | None) -> str:
        """The question of the run a thread holds, to go on with it."""
        question = None
        if config and config.get("configurable", {}).get("thread_id") and self.checkpointer:
            question = (await self.aget_state(config)).values.get("question")
        if not isinstance(question, str):
            raise ConfigError(
                'a society\'s run takes {"question": "..."} as its input: this thread holds no '
                "run to go on with"
            )
        return question

    def _context(self, question: str) -> RunContext:
        """A new run's context, after the checks every run makes (an empty question, a first
        prompt too long for a model)."""
        self.society.check(question)
        return self.society.context(question)

    def _limited(self, config: RunnableConfig | None) -> RunnableConfig:
        """The run's config with the protocol's step limit (or a lower one asked for: the
        server's default is in the thousands) and the society's concurrency."""
        society = self.society
        limit = society.protocol.recursion_limit(society.agents)
        limited: dict[str, Any] = dict(config or {})
        limited["recursion_limit"] = min(limited.get("recursion_limit") or limit, limit)
        if limited.get("max_concurrency") is None:
            limited["max_concurrency"] = society.max_concurrency or min(len(society.agents), 16)
        return cast(RunnableConfig, limited)

    def get_input_jsonschema(self, config: RunnableConfig | None = None) -> dict[str, Any]:
        return SocietyInput.model_json_schema()

    def get_output_jsonschema(self, config: RunnableConfig | None = None) -> dict[str, Any]:
        # LangGraph's own reading of the state fails on Python < 3.12 (typing.TypedDict).
        hints = get_type_hints(self.builder.output_schema)
        fields: Any = {key: (hint | None, None) for key, hint in hints.items()}
        return create_model(self.get_name("Output"), **fields).model_json_schema()


def served_graph(
    society: Society, name: str | None = None, *, max_question: int = MAX_QUESTION
) -> SocietyGraph:
    """The society's protocol graph, compiled for LangGraph Server: a `langgraph.json` graph
    names a module variable holding it (the graph is named after it unless `name` is given).
    A run takes {"question": ...} and leaves a state with "answer" and "turns"."""
    compiled = society.graph(asynchronous=True).compile(name=name)
    parts = {key: value for key, value in vars(compiled).items() if key != "__orig_class__"}
    # The context is made on the server, never sent: the server is shown no context schema.
    parts["context_schema"] = None
    return SocietyGraph(society=society, max_question=max_question, **parts)


def society_graph(
    path: str | Path, *, model: str | None = None, name: str | None = None
) -> SocietyGraph:
    """`served_graph` of the society file at `path` (named by its stem); `model` replaces every
    agent's model."""
    return served_graph(load_society(path, model=model), name or Path(path).stem)


def langgraph_files(
    societies: Mapping[str, Path], config: Path, *, model: str | None = None
) -> dict[Path, str]:
    """The files that serve `societies` (graph name -> society file) when `langgraph dev` runs
    in the folder of `config`, by path: `config` (a `langgraph.json`) and the graph module it
    names, beside it. No society: the text debate of `moot debate` (3 agents, 2 rounds).
    Each society is built here first, so that a mistake is reported now, not by the server."""
    folder = config.parent
    graphs: dict[str, Any] = {}
    lines: list[str] = []
    variables = {"HERE", "MODEL", "Path", "moot", "served_graph", "society_graph"}
    for name, path in societies.items():
        file = SocietyFile.read(path)
        file.society(model=model)
        variable = _variable(name, variables)
        variables.add(variable)
        lines.append(f"{variable} = society_graph({_path_code(path, folder)}, model=MODEL)")
        entry = f"./{GRAPHS_MODULE}:{variable}"
        description = file.spec.description
        graphs[name] = {"path": entry, "description": description} if description else entry
    if societies:
        imports = ["from moot.integrations.langgraph_server import society_graph"]
    else:
        imports = ["import moot", "from moot.integrations.langgraph_server import served_graph"]
        lines.append(_DEFAULT_SOCIETY.format(model="MODEL" if model else '"local"'))
        graphs["debate"] = f"./{GRAPHS_MODULE}:debate"
    code = [
        '"""moot societies as LangGraph Server graphs (written by `moot langgraph`)."""',
        "",
        "from pathlib import Path",
        "",
        *imports,
        "",
        "HERE = Path(__file__).parent",
        f"MODEL = {json.dumps(model) if model else None}",
        '"""The model of every agent (None: each society\'s own)."""',
        "",
        *lines,
    ]
    settings = {"dependencies": ["."], "graphs": graphs, "env": OFFLINE_ENV}
    return {
        config: json.dumps(settings, indent=2) + "\n",
        folder / GRAPHS_MODULE: "\n".join(code) + "\n",
    }


_DEFAULT_SOCIETY = """\
debate = served_graph(
    moot.Society(
        agents=[moot.Agent(name=f"agent{{n}}", model={model}) for n in (1, 2, 3)],
        protocol=moot.Debate(rounds=2),
    ),
    "debate",
)"""


def _variable(name: str, taken: set[str]) -> str:
    """A Python name for the graph `name`, not one of the names `taken`."""
    base = "".join(c if c.isalnum() else "_" for c in name)
    if not base.isidentifier() or keyword.iskeyword(base):
        base = f"society_{base}"
    variable, n = base, 2
    while variable in taken:
        variable, n = f"{base}_{n}", n + 1
    return variable


def _path_code(path: Path, folder: Path) -> str:
    """Python code for `path`: relative to the module's folder where the two share a folder
    (so that a project can move with its society files), else absolute."""
    path, folder = path.resolve(), folder.resolve()
    try:
        shared = Path(os.path.commonpath([path, folder]))
    except ValueError:  # another drive (Windows)
        shared = Path(path.anchor)
    if shared == Path(path.anchor):
        return json.dumps(str(path))
    return f"HERE / {json.dumps(Path(os.path.relpath(path, folder)).as_posix())}"
