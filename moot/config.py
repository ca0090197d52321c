"""The base of moot's configuration types (agents, protocols, aggregators, societies).

Unknown fields are errors, not silently dropped, and a bad value raises `ConfigError` naming the
type, the field and the problem, whether it came from Python or from a society file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic._internal._model_construction import ModelMetaclass

from moot.errors import ConfigError


class _RaisesConfigError(ModelMetaclass):
    """Turns a failed construction `Type(...)` into a ConfigError.

    (Not `__init__`: pydantic calls a custom `__init__` when the model is validated inside
    another one, too, which would hide the nested field's path.)
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as error:
            raise ConfigError(f"{cls.__name__}: {describe(error)}") from error


class Config(BaseModel, metaclass=_RaisesConfigError):
    """A validated settings object; construction errors are `ConfigError`s."""

    # inf and nan pass `ge=`/`le=` bounds, then fail every call: refuse them here.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)


def describe(
    error: ValidationError, skip: set[str] | frozenset[str] = frozenset(), whole: str = ""
) -> str:
    """`field.path: what is wrong` for the first problem (path parts in `skip` left out; a
    problem of the whole object is named `whole`, or not at all)."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"] if part not in skip) or whole
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    elif first["type"] == "union_tag_invalid":
        message = f"unknown kind: use one of {first['ctx']['expected_tags']}"
    count = error.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{field}: {message}{more}" if field else f"{message}{more}"


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of the file at `path` (`what` names it in errors: "society file")."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {error.object[error.start]:#x} at offset "
            f"{error.start}): save it as UTF-8"
        ) from None
