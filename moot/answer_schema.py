"""Typed answers as a file writes them: "module:Model", or the answer's fields by type name.

    answer_schema: {value: number, unit: string, note: "string?"}
    answer_schema: my_package.answers:Reading

`answer_schema` makes the pydantic model; `written_schema` goes back, so that a society built in
Python can be written to a file when its schema can be named.
"""

from __future__ import annotations

import pkgutil
from types import GenericAlias, NoneType
from typing import Any, get_args, get_origin

from pydantic import BaseModel, create_model

_FIELD_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
FIELD_TYPES = ", ".join([*_FIELD_TYPES, *(f"list[{name}]" for name in _FIELD_TYPES)])
"""The type names a written schema takes (a trailing "?" makes a field optional)."""


class WrittenAnswer(BaseModel):
    """The base of the models `answer_schema` makes from fields: only those are written back as
    fields (a model of your own may hold validators that a list of fields would lose)."""


def answer_schema(value: str | dict[str, str]) -> type[BaseModel]:
    """The pydantic model that `value` names ("module:Model") or describes (field -> type name).

    Raises ValueError saying what is wrong (a society file adds the line)."""
    if isinstance(value, str):
        try:
            found = pkgutil.resolve_name(value)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"'{value}' cannot be imported ({error}): use MODULE:MODEL") from None
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise ValueError(f"'{value}' is not a pydantic model")
        return found
    if not value:
        raise ValueError("give the answer at least one field, e.g. {value: number}")
    fields: dict[str, Any] = {}
    for name, type_name in value.items():
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"field name '{name}' must be a word of letters, digits and _")
        optional = type_name.endswith("?")
        base = type_name.removesuffix("?").replace(" ", "")
        inner = base[5:-1] if base.startswith("list[") and base.endswith("]") else None
        if (inner or base) not in _FIELD_TYPES:
            raise ValueError(f"field '{name}': unknown type '{type_name}' (use {FIELD_TYPES})")
        kind = GenericAlias(list, (_FIELD_TYPES[inner],)) if inner else _FIELD_TYPES[base]
        fields[name] = (kind | None, None) if optional else (kind, ...)
    model: type[BaseModel] = create_model("Answer", __base__=WrittenAnswer, **fields)
    return model


def written_schema(model: type[BaseModel]) -> str | dict[str, str] | None:
    """How a file writes `model`: its import path if it can be imported back, else its fields
    by type name if `answer_schema` made it from them; None if neither (it stays in memory)."""
    path = f"{model.__module__}:{model.__qualname__}"
    try:
        if pkgutil.resolve_name(path) is model:
            return path
    except (ImportError, AttributeError, ValueError):
        pass
    if not issubclass(model, WrittenAnswer):
        return None
    names = {kind: name for name, kind in _FIELD_TYPES.items()}
    fields: dict[str, str] = {}
    for name, field in model.model_fields.items():
        kind, optional = field.annotation, not field.is_required()
        if optional:  # kind | None
            (kind,) = [part for part in get_args(kind) if part is not NoneType]
        inner = get_args(kind)[0] if get_origin(kind) is list else None
        fields[name] = (f"list[{names[inner]}]" if inner else names[kind]) + "?" * optional
    return fields
