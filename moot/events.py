"""What `Society.stream` yields: tokens as agents write them, finished turns, the result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from moot.result import Result, Turn


class TokenEvent(BaseModel):
    """A piece of an agent's reply, as the model streams it."""

    kind: Literal["token"] = "token"
    agent: str
    round: int
    text: str


class TurnEvent(BaseModel):
    """An agent finished its turn."""

    kind: Literal["turn"] = "turn"
    turn: Turn


class ResultEvent(BaseModel):
    """The run is over; always the last event."""

    kind: Literal["result"] = "result"
    result: Result


Event = TokenEvent | TurnEvent | ResultEvent


def events_of(mode: str, chunk: Any) -> Iterator[Event]:
    """The events in one part of a LangGraph stream ("messages" or "updates" mode)."""
    if mode == "messages":
        message, metadata = chunk
        if "moot_agent" in metadata and message.text:
            yield TokenEvent(
                agent=metadata["moot_agent"], round=metadata["moot_round"], text=message.text
            )
    elif mode == "updates":
        for update in chunk.values():
            for turn in (update or {}).get("turns", []) if isinstance(update, dict) else []:
                yield TurnEvent(turn=turn)
