"""Society files: a `moot.spec.SocietySpec` written in YAML.

    models:                 # optional: names for model specs, shared by the agents naming them
      small: local
      big: {spec: "llama:/models/qwen.gguf", n_ctx: 8192}
    agents:
      - {name: agent, copies: 3, trait: easy-going, model: small}
    protocol: {kind: debate, rounds: 3, consensus: 1.0}
    aggregator: {kind: vote, extract: number}
    answer_schema: {value: number, unit: string}   # optional: typed answers (or "module:Model")
    vote_on: value

Every field of a protocol, an aggregator or an agent is a key here (`moot.spec`). Errors name
the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from pydantic import ValidationError

from moot.config import describe
from moot.errors import ConfigError
from moot.kinds import AGGREGATORS, PROTOCOLS
from moot.society import Society
from moot.spec import SocietySpec, SpecError, society_fields
from moot.yaml_file import Lines, line_of, load_yaml, located


@dataclass(frozen=True)
class SocietyFile:
    """A society file read and validated, with the lines its errors are reported at."""

    path: Path
    spec: SocietySpec
    lines: Lines

    @classmethod
    def read(cls, path: str | Path) -> SocietyFile:
        path = Path(path)
        data, lines = load_yaml(path, "society file")
        try:
            spec = SocietySpec.model_validate(data)
        except ValidationError as error:
            raise ConfigError(located(error, lines, path, _tag(error))) from error
        return cls(path, spec, lines)

    def society(
        self, spec: SocietySpec | None = None, *, model: str | BaseChatModel | None = None
    ) -> Society:
        """The society of `spec` (default: the file's; a command may have changed it), on
        `model` if given; a mistake is reported at its line of this file."""
        with self.located():
            return Society(**society_fields(spec or self.spec, model=model))

    @contextmanager
    def located(self) -> Iterator[None]:
        """Report a mistake of the spec made inside at its line of this file."""
        try:
            yield
        except ConfigError as error:
            where, message = _at_fault(error)
            line = line_of(self.lines, where)
            raise ConfigError(f"{self.path}:{line}: {message}") from error


def load_spec(path: str | Path) -> SocietySpec:
    """The spec written in the YAML file at `path`."""
    return SocietyFile.read(path).spec


def load_society(path: str | Path, *, model: str | BaseChatModel | None = None) -> Society:
    """The society written in the YAML file at `path`; `model` replaces every agent's model."""
    return SocietyFile.read(path).society(model=model)


def _at_fault(error: ConfigError) -> tuple[tuple[str | int, ...], str]:
    """Where a spec's mistake is, and what it is: a SpecError says; a society that refuses its
    fields names the field, or else it is the protocol's own check."""
    if isinstance(error, SpecError):
        return error.where, str(error)
    cause = error.__cause__
    if isinstance(cause, ValidationError):
        return tuple(cause.errors()[0]["loc"]) or ("protocol",), describe(cause)
    return ("protocol",), str(error)


def _tag(error: ValidationError) -> frozenset[str]:
    """The kind pydantic puts in the path of a protocol's or aggregator's field (protocol.debate.
    rounds), left out of the path shown; only there, as a field may share a kind's name."""
    loc = error.errors()[0]["loc"]
    if len(loc) > 1 and loc[0] in ("protocol", "aggregator") and loc[1] in _KINDS:
        return frozenset({str(loc[1])})
    return frozenset()


_KINDS = frozenset({*PROTOCOLS, *AGGREGATORS})
