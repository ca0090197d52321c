"""A small MCP server for tests/test_mcp_tools.py, written with the MCP SDK's FastMCP.

    python tests/mcp_tool_server.py                 # over stdio
    python tests/mcp_tool_server.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp

Its tools: one that adds, one that raises, one that hangs, one that counts characters (for huge
input), one that names its process (so a test sees whether a session was kept or restarted) and
one that ends the process (a server that dies in the middle of a run).
"""

from __future__ import annotations

import argparse
import os

import anyio
from mcp.server.fastmcp import FastMCP

server = FastMCP("moot-test-tools", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
async def hang(seconds: float = 3600) -> str:
    """Waits `seconds` before answering (an hour unless told)."""
    await anyio.sleep(seconds)
    return "woke up"


@server.tool()
def length(text: str) -> int:
    """How many characters `text` has."""
    return len(text)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Ends the server's process at once, without an answer."""
    os._exit(3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    args = parser.parse_args()
    if args.http:
        server.settings.port = args.http
        server.run(transport="streamable-http")
    else:
        server.run()
