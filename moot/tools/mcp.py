"""MCP servers as agents' tools: `Agent(tools=["mcp:python my_server.py"])`.

An entry names a server; each tool the server lists becomes a LangChain tool of the agent,
called in moot's tool loop like any other (the agent's timeout, retries and `ToolCall` records):

    "mcp:COMMAND ARG..."             a server moot starts, spoken to over stdio
    "mcp:http://HOST:PORT/mcp"       a running server, over streamable HTTP (https too)
    {mcp: {command: ..., args: [...], env: {...}, cwd: ..., tools: [...], start_timeout: 30}}
    {mcp: {url: ..., headers: {...}, tools: [...]}}

This module reads and checks entries (`MCPServer`, `server_of`); `moot.tools.mcp_sessions`
starts the servers, holds their sessions and calls their tools.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from moot.config import Config
from moot.errors import ConfigError, MissingExtraError, MootError

PREFIX = "mcp:"
_VARIABLE = re.compile(r"\$\{([^}]+)\}")
"""${NAME} in env and header values: taken from moot's environment when the server starts."""


class MCPServerError(MootError):
    """An MCP server that did not start, or whose connection failed: the turn that needed it
    fails (a tool call that it broke is recorded as that call's error), the run goes on."""


class MCPUnreachableError(MCPServerError, ConnectionError):
    """An MCP server at a URL that refused or dropped the connection: a passing failure, so the
    agent's `retries` repeat the turn."""


class MCPToolError(Exception):
    """A tool of an MCP server reported an error (the model is shown it)."""


class MCPServer(Config):
    """An MCP server whose tools an agent may call: a command (stdio) or a URL (streamable
    HTTP). Written in files as "mcp:COMMAND ARG..." or "mcp:URL", or as {mcp: {...}} with
    these fields."""

    model_config = ConfigDict(frozen=True)

    command: str | None = None
    """The program that runs the server over stdio ("python", "npx"); found on PATH."""
    args: list[str] = Field(default_factory=list)
    """The command's arguments (a relative path is relative to `cwd`, else to moot's folder)."""
    env: dict[str, str] | None = None
    """Environment variables for the server, over the MCP SDK's small default set (HOME,
    PATH, USER...): moot's own environment is not passed on."""
    cwd: str | None = None
    """The folder the command runs in."""
    url: str | None = None
    """The server's streamable HTTP endpoint, e.g. http://127.0.0.1:8000/mcp."""
    headers: dict[str, str] | None = None
    """HTTP headers sent with each request (an Authorization header, say)."""
    tools: list[str] | None = None
    """Only these of the server's tools (None: all it lists)."""
    start_timeout: float = Field(default=30, gt=0, le=3600)
    """Seconds the server may take to start and list its tools; past them the turn fails."""

    @field_validator("command")
    @classmethod
    def _command_is_a_word(cls, command: str | None) -> str | None:
        if command is not None and not command.strip():
            raise ValueError("command is empty: give the program that runs the server")
        return command

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"'{url}' is not an http:// or https:// URL (MCP over streamable HTTP); for a "
                "server started over stdio give its command instead"
            )
        return url

    @field_validator("tools")
    @classmethod
    def _tools_are_named_once(cls, tools: list[str] | None) -> list[str] | None:
        if tools is not None and (not tools or any(not name.strip() for name in tools)):
            raise ValueError("tools lists the names of the server's tools to use (leave it out "
                             "for all of them)")  # fmt: skip
        if tools is not None and len(set(tools)) < len(tools):
            raise ValueError("tools names a tool twice")
        return tools

    @model_validator(mode="after")
    def _command_or_url(self) -> MCPServer:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                "give an MCP server either a command (stdio: mcp:python server.py) or a url "
                "(streamable HTTP: mcp:http://127.0.0.1:8000/mcp)"
                + (", not both" if self.command is not None else "")
            )
        misplaced = (
            ["headers"] * (self.headers is not None)
            if self.command
            else [name for name in ("args", "env", "cwd") if getattr(self, name)]
        )
        if misplaced:
            kind = "a command (stdio)" if self.command else "a url (streamable HTTP)"
            raise ValueError(f"{', '.join(misplaced)} do not apply to a server given by {kind}")
        return self

    @classmethod
    def parse(cls, text: str) -> MCPServer:
        """The server of "COMMAND ARG..." or "URL" (what follows "mcp:")."""
        text = text.strip()
        if not text:
            raise ValueError(
                "'mcp:' needs a server: a command (mcp:python server.py) or a URL "
                "(mcp:http://127.0.0.1:8000/mcp)"
            )
        if "://" in text.split()[0]:
            return cls(url=text)
        try:
            command, *args = shlex.split(text)
        except ValueError as error:
            raise ValueError(f"cannot read the command '{text}': {error}") from None
        return cls(command=command, args=args)

    @property
    def label(self) -> str:
        """The server as one line: "mcp:python server.py", "mcp:http://...": in errors."""
        target = self.url or shlex.join([self.command or "", *self.args])
        return PREFIX + target

    def written(self) -> str | dict[str, Any]:
        """The server as a file writes it: "mcp:..." where that says it all, else {mcp: {...}}."""
        fields = self.model_dump(mode="json", exclude_defaults=True)
        if set(fields) <= {"command", "args", "url"}:
            return self.label
        return {"mcp": fields}

    def key(self) -> str:
        """What makes two entries one server (one session): all but the choice of tools."""
        return self.model_dump_json(exclude={"tools", "start_timeout"})

    def check(self) -> None:
        """Raise before any call what can be known then: the extra is missing, the command or
        its folder is not found, an env or header value names a variable that is not set."""
        if importlib.util.find_spec("langchain_mcp_adapters") is None:
            raise MissingExtraError("langchain-mcp-adapters", "mcp", f"the MCP server {self.label}")
        for part in ("env", "headers"):
            for name, value in (getattr(self, part) or {}).items():
                unset = [var for var in _VARIABLE.findall(value) if var not in os.environ]
                if unset:
                    raise ConfigError(
                        f"MCP server {self.label}: {part}.{name} takes ${{{unset[0]}}} from the "
                        "environment, which does not set it: set it, or write the value"
                    )
        if self.command is None:
            return
        if self.cwd is not None and not Path(self.cwd).is_dir():
            raise ConfigError(f"MCP server {self.label}: its cwd {self.cwd} is not a folder")
        if os.sep in self.command:
            path = Path(self.cwd or ".") / self.command
            found = path.is_file() and os.access(path, os.X_OK)
        else:
            search = (self.env or {}).get("PATH") or os.environ.get("PATH")
            found = shutil.which(self.command, path=search) is not None
        if not found:
            raise ConfigError(
                f"MCP server {self.label}: the command '{self.command}' is not found"
                f"{'' if os.sep in self.command else ' on PATH'}: install it, or give its full "
                "path"
            )

    def expanded(self, part: str) -> dict[str, str] | None:
        """`env` or `headers` with each ${NAME} taken from moot's environment."""
        values: dict[str, str] | None = getattr(self, part)
        if values is None:
            return None
        return {
            name: _VARIABLE.sub(lambda var: os.environ.get(var[1], var[0]), value)
            for name, value in values.items()
        }


def server_of(item: Any) -> MCPServer | None:
    """The MCP server an entry of `Agent.tools` names, or None for an entry that is not one."""
    if isinstance(item, MCPServer):
        return item
    if isinstance(item, str) and item.startswith(PREFIX):
        return MCPServer.parse(item.removeprefix(PREFIX))
    if isinstance(item, Mapping) and "mcp" in item:
        if set(item) != {"mcp"}:
            raise ValueError(
                "an MCP entry holds one key, mcp: {mcp: {command: ..., args: [...], tools: "
                "[...]}}; put the other keys under it"
            )
        value = item["mcp"]
        if isinstance(value, str):
            return MCPServer.parse(value.removeprefix(PREFIX))
        if isinstance(value, Mapping):
            return MCPServer(**value)
        raise ValueError("mcp: give a command, a URL, or {command: ..., args: [...]}")
    return None
