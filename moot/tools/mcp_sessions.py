"""The sessions of agents' MCP servers (`moot.tools.mcp`), and their tools as LangChain tools.

A server is started on the first turn that needs it and its session is held open, shared by
every agent and run of this process that names the same server. langchain-mcp-adapters makes
the tools (`load_mcp_tools`) and opens HTTP sessions (`MultiServerMCPClient.session`); stdio
sessions are opened with the MCP SDK's `stdio_client` directly, as the adapters do, because
that takes an `errlog`: a server's stderr (FastMCP logs every request there) goes to a
temporary file rather than over the terminal, and its last lines explain a server that did not
start or died.

The adapters are async only. The sessions live on a private event loop in a daemon thread, and
both kinds of run hand their calls to it: sync runs (threads) wait for a
`concurrent.futures.Future`, async runs on any loop await it (`asyncio.wrap_future`), and
cancelling either cancels the call in the session. A session whose transport fails (the server
died) is dropped and started again when next needed; all are closed at exit (`close_sessions`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from langchain_core.tools import BaseTool, ToolException

from moot.errors import CallTimeoutError, ConfigError
from moot.tools.mcp import MCPServer, MCPServerError, MCPToolError, MCPUnreachableError

T = TypeVar("T")


class MCPTool(BaseTool):
    """One tool of an MCP server, called in the server's session on the private loop, from
    sync or async code."""

    server: MCPServer
    """Where the tool is."""
    bound: float | None = None
    """Seconds a sync call waits before it is cancelled on the loop: a second past the agent's
    timeout, which fails the turn first; the call is then not left running in the session.
    (An async call is cancelled with its turn.)"""

    def _run(self, **arguments: Any) -> str:
        return _sessions().run(_sessions().call(self.server, self.name, arguments), self.bound)

    async def _arun(self, **arguments: Any) -> str:
        return await _sessions().arun(_sessions().call(self.server, self.name, arguments))


def tools_of(entries: list[Any], timeout: float | None = None) -> list[BaseTool]:
    """`entries` (tools and MCP servers) as tools: each server started if need be and its
    tools listed. Raises MCPServerError for a server that does not start, ConfigError for
    tool names that clash or a `tools:` choice the server lacks."""
    servers = [entry for entry in entries if isinstance(entry, MCPServer)]
    listed = _sessions().run(_sessions().list_all(servers)) if servers else {}
    return _expanded(entries, listed, timeout)


async def atools_of(entries: list[Any], timeout: float | None = None) -> list[BaseTool]:
    """`tools_of` for async code."""
    servers = [entry for entry in entries if isinstance(entry, MCPServer)]
    listed = await _sessions().arun(_sessions().list_all(servers)) if servers else {}
    return _expanded(entries, listed, timeout)


def close_sessions(timeout: float = 10) -> None:
    """Close every MCP session this process holds (stdio servers end); later turns start them
    again. Called at exit."""
    sessions = _SESSIONS.get("current")
    if sessions is not None and sessions.pid == os.getpid():
        with contextlib.suppress(CallTimeoutError):  # (what is left ends with the process)
            sessions.run(sessions.close_all(), timeout)


Listed = dict[str, dict[str, tuple[str, Any]]]
"""Each server's tools (by its key): name -> (description, argument schema)."""


def _expanded(entries: list[Any], listed: Listed, timeout: float | None) -> list[BaseTool]:
    """The agent's tools with each server replaced by its (chosen) tools; names must differ."""
    tools: list[BaseTool] = []
    origin: dict[str, str] = {}
    for entry in entries:
        made, where = [entry], "the agent's tools"
        if isinstance(entry, MCPServer):
            offered, where = listed[entry.key()], entry.label
            missing = [name for name in entry.tools or [] if name not in offered]
            if missing or not offered:
                raise ConfigError(
                    f"MCP server {entry.label} has no tool {', '.join(map(repr, missing))} (it "
                    f"has: {', '.join(offered) or 'none'}): fix its tools: list"
                    if missing
                    else f"MCP server {entry.label} offers no tools"
                )
            bound = None if timeout is None else timeout + 1
            made = [
                MCPTool(
                    name=name,
                    description=offered[name][0],
                    args_schema=offered[name][1],
                    server=entry,
                    bound=bound,
                )
                for name in entry.tools or offered
            ]
        for tool in made:
            if tool.name in origin:
                raise ConfigError(
                    f"two tools are named '{tool.name}' ({origin[tool.name]}, {where}): give "
                    "the MCP server a tools: list without one of them"
                )
            origin[tool.name] = where
            tools.append(tool)
    return tools


@dataclass(eq=False)
class _Held:
    """An open session: its server's tools (the adapters', by name), how to end it, and the
    file its stderr goes to (stdio)."""

    tools: dict[str, BaseTool]
    errlog: IO[bytes] | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class _Sessions:
    """The sessions of this process, on a private event loop in a daemon thread. Its state is
    touched only on that loop."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="moot-mcp", daemon=True).start()
        self.held: dict[str, asyncio.Future[_Held]] = {}
        """By server key: the session, once started (or why it did not start)."""
        self.tasks: dict[asyncio.Task[None], asyncio.Future[_Held]] = {}
        """The tasks that hold sessions, with the futures that say whether they started."""

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and wait for it (cancelled there past `timeout`, or when
        the waiting thread is interrupted)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise CallTimeoutError(f"the MCP call did not end within {timeout:g} s") from None
        except BaseException:
            future.cancel()
            raise

    async def arun(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop from another loop; cancelling the caller cancels it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def list_all(self, servers: list[MCPServer]) -> Listed:
        """Each server's tools, the servers started at once."""
        opened = await asyncio.gather(*(self.open(server) for server in servers))
        return {
            server.key(): {name: (t.description, t.args_schema) for name, t in held.tools.items()}
            for server, held in zip(servers, opened, strict=True)
        }

    async def open(self, server: MCPServer) -> _Held:
        """The server's session, started if there is none (or the last one was dropped)."""
        key = server.key()
        ready = self.held.get(key)
        if ready is None or (ready.done() and _failed(ready)):
            ready = self.held[key] = self.loop.create_future()
            task = self.loop.create_task(self._hold(server, ready))
            self.tasks[task] = ready
            task.add_done_callback(lambda done: self.tasks.pop(done, None))
            self.loop.call_later(server.start_timeout, self._too_slow, server, ready, task)
        return await asyncio.shield(ready)

    def _too_slow(self, server: MCPServer, ready: asyncio.Future[_Held], task: Any) -> None:
        if not ready.done():
            ready.set_exception(
                MCPServerError(
                    f"MCP server {server.label} did not start within {server.start_timeout:g} s "
                    "(start_timeout): check that it runs on its own, or allow it longer"
                )
            )
            task.cancel()

    async def _hold(self, server: MCPServer, ready: asyncio.Future[_Held]) -> None:
        """Open the session, say so through `ready`, and keep it open until told to stop."""
        from langchain_mcp_adapters.tools import load_mcp_tools

        with tempfile.TemporaryFile() if server.command else contextlib.nullcontext() as errlog:
            try:
                async with _session(server, errlog) as session:
                    listed = await load_mcp_tools(session, handle_tool_errors=False)
                    held = _Held({tool.name: tool for tool in listed}, errlog)
                    if not ready.done():
                        ready.set_result(held)
                        await held.stop.wait()
            except BaseException as error:  # noqa: BLE001 - said to whoever waits for the start
                if not ready.done():
                    ready.set_exception(_start_error(server, error, errlog))
            finally:
                if self.held.get(server.key()) is ready:
                    del self.held[server.key()]
                if not ready.done():
                    ready.cancel()

    async def call(self, server: MCPServer, name: str, arguments: dict[str, Any]) -> str:
        """Call tool `name` of `server`: its text, MCPToolError for a tool's error, or
        MCPServerError for a failed connection (the session is dropped)."""
        held = await self.open(server)
        tool = held.tools.get(name)
        if tool is None:
            raise MCPToolError(f"the server no longer lists a tool '{name}'")
        try:
            content = await tool.ainvoke(arguments)
        except ToolException as error:
            raise MCPToolError(str(error)) from None
        except Exception as error:
            said = f"{_said(error)}{_stderr(held.errlog)}"
            self.drop(server, held)
            raise MCPServerError(
                f"the connection to MCP server {server.label} failed during the call ({said}); "
                "it is started again when next needed"
            ) from None
        return _text(content)

    def drop(self, server: MCPServer, held: _Held) -> None:
        """Forget a session that failed, and end it."""
        ready = self.held.get(server.key())
        if ready is not None and ready.done() and not _failed(ready) and ready.result() is held:
            del self.held[server.key()]
        held.stop.set()

    async def close_all(self) -> None:
        """End every session: open ones are told to stop, starting ones are cancelled (one
        that failed is already ending: cancelled again, anyio's cleanup of a stdio process
        would never end)."""
        for task, ready in list(self.tasks.items()):
            if not ready.done():
                task.cancel()
            elif not _failed(ready):
                ready.result().stop.set()
        self.held.clear()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _session(server: MCPServer, errlog: IO[bytes] | None) -> AsyncIterator[Any]:
    """An initialized session with the server: over HTTP as the adapters open it, over stdio
    as they do too, but with the server's stderr into `errlog`."""
    if server.url is not None:
        from langchain_mcp_adapters.client import MultiServerMCPClient

        connection = {"transport": "streamable_http", "url": server.url}
        connection["headers"] = server.expanded("headers")  # type: ignore[assignment]
        client = MultiServerMCPClient({"server": connection})  # type: ignore[dict-item]
        async with client.session("server") as session:
            yield session
        return
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    parameters = StdioServerParameters(
        command=server.command or "", args=server.args, env=server.expanded("env"), cwd=server.cwd
    )
    async with (
        stdio_client(parameters, errlog=errlog) as (read, write),  # type: ignore[arg-type]
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _failed(ready: asyncio.Future[_Held]) -> bool:
    """Whether a start that is done failed (or was cancelled)."""
    return ready.cancelled() or ready.exception() is not None


_SESSIONS: dict[str, _Sessions] = {}
_LOCK = threading.Lock()


def _sessions() -> _Sessions:
    """This process's sessions (a forked process makes its own: the loop's thread stays in
    the parent)."""
    with _LOCK:
        current = _SESSIONS.get("current")
        if current is None or current.pid != os.getpid():
            current = _SESSIONS["current"] = _Sessions()
            atexit.register(close_sessions)
            stdio_log = logging.getLogger("mcp.client.stdio")
            if not any(isinstance(kept, _OneLine) for kept in stdio_log.filters):
                stdio_log.addFilter(_OneLine())
        return current


class _OneLine(logging.Filter):
    """The MCP SDK logs each line a stdio server writes to stdout that is not a message
    (a stray print) with a traceback: this keeps it to one line that says what was wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            said = [line.strip() for line in str(error).splitlines() if line.strip()]
            said = [line for line in said if not line.startswith("For further information")]
            record.msg = (
                f"{record.getMessage()} (a stdio MCP server may write only MCP messages to "
                f"stdout; its logs go to stderr): {said[-1] if said else type(error).__name__}"
            )
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def _said(error: BaseException) -> str:
    """An error as "Type: message", the first one inside exception groups (anyio wraps a
    task's failure in one)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}".rstrip(": ")


def _stderr(errlog: IO[bytes] | None, lines: int = 3) -> str:
    """The last lines a stdio server wrote to stderr, as "; its stderr ended: ...", or ""."""
    if errlog is None or errlog.closed:
        return ""
    # pread: the server shares the file's offset, which a seek would move under its writes.
    size = os.fstat(errlog.fileno()).st_size
    tail = os.pread(errlog.fileno(), 4000, max(0, size - 4000)).decode(errors="replace")
    kept = [line.strip() for line in tail.splitlines() if line.strip()][-lines:]
    return f"; its stderr ended: {' | '.join(kept)}" if kept else ""


def _start_error(
    server: MCPServer, error: BaseException, errlog: IO[bytes] | None
) -> MCPServerError:
    if server.url is not None:
        return MCPUnreachableError(
            f"MCP server {server.label} cannot be reached ({_said(error)}): check that it runs "
            "and that the URL, path included, is right"
        )
    return MCPServerError(
        f"MCP server {server.label} did not start ({_said(error)}{_stderr(errlog)}): run the "
        "command on its own to see why"
    )


def _text(content: Any) -> str:
    """A tool's result as text: its text blocks joined, other blocks named."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict):  # an image or a file: named, not dumped
            parts.append(f"[{block.get('type', 'content')}]")
        else:
            parts.append(str(block))
    return "\n".join(parts)
