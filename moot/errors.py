"""Errors that reach users. Each message says what is wrong and how to fix it, in one line."""


class MootError(Exception):
    """Base class: the CLI prints these as `error: MESSAGE` and exits with status 2."""


class ModelSpecError(MootError):
    """A model spec that names no known backend, or whose backend cannot be loaded."""


class MissingExtraError(MootError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed: "
            f"run `pip install 'moot[{extra}]'`"
        )


class ContextLengthError(MootError):
    """A prompt does not fit the model's context window."""


class ConfigError(MootError, ValueError):
    """A society, protocol, agent or file is configured in a way that cannot run.

    A ValueError too, so code that catches pydantic's validation errors (ValueErrors) still
    catches it.
    """


class CallTimeoutError(MootError, TimeoutError):
    """A model call ran past its agent's time limit (`Agent(timeout=...)`, `--timeout`)."""


class CallCancelledError(MootError):
    """A model call stopped because its run was cancelled (Ctrl-C, a cancelled task, a client
    that hung up). Unfinished work, not a failed turn: it is never checkpointed as a turn, so
    `resume` makes the call again."""


class ProgramError(MootError):
    """A program agent's program could not be run or failed (`Agent(kind="program")`): its
    turn fails, keeping the reply and what it cost (`reply`), and the run goes on.

    `lasting`: the same reply would fail the same way on any machine (no program, an exception,
    nothing printed), so the failed turn may be stored in the call cache; a time or CPU limit
    depends on the machine's load and is not lasting."""

    def __init__(self, message: str, reply: object = None, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.reply = reply
        self.lasting = lasting
