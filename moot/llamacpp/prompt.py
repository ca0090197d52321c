"""Prompts as tokens: a chat template applied, and cut into the chunks a context decodes.

How a prompt is cut into chunks changes logits (evaluating N tokens at once or N-1 then 1
differs in the last bits), so every decoder here cuts by one rule that depends only on the
conversation: `prompt_chunks`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from moot.errors import ModelSpecError

if TYPE_CHECKING:
    from moot.llamacpp.model import LoadedModel

ChatMessage = dict[str, str]
"""One message as llama-cpp-python's chat handlers take it: {"role": ..., "content": ...}."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prompt_chunks(
    prompt: list[int], cuts: Sequence[int], start: int, size: int, split_last: bool = True
) -> deque[list[int]]:
    """A call's prompt from `start` as chunks, cut where a message ends, then every `size`
    tokens, and the last token alone (so an identical prompt can reuse all but that token;
    unless `split_last` is False)."""
    last = len(prompt) - 1 if split_last else len(prompt)
    ends = sorted({cut for cut in cuts if start < cut < last})
    ends.append(last)
    pieces: deque[list[int]] = deque()
    for end in ends:
        while start < end:
            pieces.append(prompt[start : min(start + size, end)])
            start += len(pieces[-1])
    if split_last:
        pieces.append(prompt[-1:])
    return pieces


def chat_prompt(
    formatter: Any,
    tokenize: Callable[[str, bool, bool], list[int]],
    messages: list[ChatMessage],
    stop: list[str],
) -> tuple[list[int], list[int], list[str]]:
    """The prompt's tokens, as llama-cpp-python's chat handlers make them; where its messages
    end (chunks are cut there, so conversations sharing their first messages can share their
    KV cache); and the stop strings with the template's own. `tokenize(text, add_bos,
    special)`."""
    result = formatter(messages=messages)
    add_bos = not result.added_special
    tokens = tokenize(result.prompt, add_bos, True)
    cuts = set()
    for end in range(1, len(messages)):
        shorter = formatter(messages=messages[:end]).prompt  # ends in an assistant header
        cuts.add(common_prefix(tokenize(shorter, add_bos, True), tokens))
    template_stop = result.stop if isinstance(result.stop, list) else [result.stop]
    return tokens, sorted(cuts), [*stop, *(s for s in template_stop if s)]


def chat_formatter(model: LoadedModel, chat_format: str | None) -> Any:
    """The formatter llama-cpp-python's `Llama` would pick for `model`: `chat_format` by name,
    else a format recognised from the GGUF's template, else that template itself."""
    from llama_cpp import llama_chat_format as formats

    raw = model.raw
    metadata = raw.metadata()
    if chat_format is None:
        chat_format = formats.guess_chat_format_from_gguf_metadata(metadata)
        template = metadata.get("tokenizer.chat_template")
        if chat_format is None and template is not None:
            eos, bos = raw.token_eos(), raw.token_bos()
            return formats.Jinja2ChatFormatter(
                template=template,
                eos_token=raw.token_get_text(eos) if eos != -1 else "",
                bos_token=raw.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        chat_format = chat_format or "llama-2"
    formatter = registered_formatter(chat_format)
    if formatter is None:
        raise ModelSpecError(
            f"chat_format {chat_format!r} is a handler, not a prompt format: load the model "
            "with engine=simple to use it"
        )
    return formatter


def is_handler_format(chat_format: str) -> bool:
    """Whether llama-cpp-python registers `chat_format` as a handler only `Llama` runs (an
    unknown name is not: it fails where the model loads)."""
    try:
        return registered_formatter(chat_format) is None
    except (ModelSpecError, ImportError):  # (without llama-cpp-python, loading says so)
        return False


def registered_formatter(chat_format: str) -> Any:
    """The prompt formatter llama-cpp-python registers as `chat_format`; None for a handler."""
    from llama_cpp import llama_chat_format as formats

    try:
        handler = formats.LlamaChatCompletionHandlerRegistry().get_chat_completion_handler_by_name(
            chat_format
        )
    except (ValueError, formats.LlamaChatCompletionHandlerNotFoundException) as error:
        raise ModelSpecError(f"unknown chat_format {chat_format!r}: {error}") from error
    # llama-cpp-python registers a formatter wrapped in a handler; the formatter is its closure.
    for cell in getattr(handler, "__closure__", None) or ():
        if callable(cell.cell_contents) and cell.cell_contents is not handler:
            return cell.cell_contents
    return None
