"""Models from the Hugging Face Hub: `hf:OWNER/REPO/FILE.gguf`.

The file is fetched once into the Hub's cache with huggingface_hub's `hf_hub_download` (so
HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN work as everywhere else) and then loaded like
`llama:PATH`, with the same options and engines. llama-cpp-python's `Llama.from_pretrained`
does the same download but first lists the repository online, so it cannot load a cached file
offline; this does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from moot.errors import MissingExtraError, ModelSpecError

USAGE = (
    "hf:OWNER/REPO/FILE.gguf, e.g. "
    "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"
)


def hf_model(spec: str, options: dict[str, Any]) -> BaseChatModel:
    """The chat model of a `hf:` spec; `revision` and `cache_dir` go to the download, the other
    options to the llama.cpp model."""
    from moot.models.llama import ChatLlama

    revision, cache_dir = options.pop("revision", None), options.pop("cache_dir", None)
    return ChatLlama.from_path(hf_file(spec, revision=revision, cache_dir=cache_dir), **options)


def hf_file(spec: str, *, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """The local path of `OWNER/REPO/FILE.gguf`, downloaded into the Hub's cache if needed."""
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf"):
        raise ModelSpecError(f"'hf:{spec}' does not name a GGUF file in a repository: use {USAGE}")
    if any(char in spec for char in "*?["):
        raise ModelSpecError(f"'hf:{spec}': name the file exactly (no patterns): use {USAGE}")
    if any(part in (".", "..") for part in spec.replace("\\", "/").split("/")):
        raise ModelSpecError(
            f"'hf:{spec}': '.' and '..' are not part of a file's name: use {USAGE}"
        )
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import constants, errors, hf_hub_download
    except ImportError as error:
        raise MissingExtraError("huggingface_hub", "hf", "an 'hf:' model") from error
    where = f"hf:{spec}"
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir))
    except errors.LocalEntryNotFoundError as error:  # not cached, and no network or offline
        cache = cache_dir or constants.HF_HUB_CACHE
        if constants.HF_HUB_OFFLINE:
            raise ModelSpecError(
                f"{where} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set: "
                "download it once online (or unset HF_HUB_OFFLINE)"
            ) from error
        raise ModelSpecError(
            f"{where} is not in the Hugging Face cache ({cache}) and could not be downloaded: "
            f"{_first_line(error)}"
        ) from error
    except errors.GatedRepoError as error:
        raise ModelSpecError(
            f"{where}: the repository is gated: accept its terms on huggingface.co and set HF_TOKEN"
        ) from error
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as error:
        raise ModelSpecError(
            f"{where}: no repository {repo}"
            + (f" at revision {revision}" if revision else "")
            + " on the Hugging Face Hub (private? set HF_TOKEN)"
        ) from error
    except errors.EntryNotFoundError as error:
        raise ModelSpecError(f"{where}: {repo} has no file {filename}") from error
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError, ValueError) as error:
        raise ModelSpecError(f"{where} could not be fetched: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
