"""Running a program a model wrote: the sandbox of program agents (`Agent(kind="program")`).

Threat model. The program is hostile: a model may write anything, and a prompt injected into
a question can make it. The sandbox must keep it from reading secrets (environment variables,
files readable by the user running moot), writing files, reaching the network, and from
exhausting the machine (CPU, memory, processes, disk, output), and must turn every such attempt
into an error for that one turn. Two layers:
1. Language: the program is compiled with RestrictedPython (Zope's, maintained since 2002): no
   names or attributes starting with "_" (no `__class__.__subclasses__()` escapes, no
   `__globals__`), no `open`, `exec`, `eval`, `compile`, `globals`, `getattr` of unsafe names,
   no str.format on objects; imports only from a short list of pure-computation modules
   (`sandbox_child.ALLOWED_MODULES`), each handed over without the modules it imported itself
   and without the helpers that read attributes named by strings (`sandbox_child.WITHHELD`).
2. Process: it runs in a fresh Python process (`-I`: no user site, no PYTHON* variables) with an
   empty environment, in a fresh temporary folder that is deleted after; the process moves into
   a network namespace of its own where the kernel allows (root, or unprivileged user
   namespaces), runs as `nobody` when moot runs as root, and has limits on CPU seconds, address
   space, file size, open files and processes (none may be started); a wall-clock limit kills its
   whole process group; at most `output_chars` of output are kept, and the parent reads a
   bounded amount of what the process writes. It sets no_new_privs and, where the kernel has
   Landlock (Linux 5.13+), confines itself to no file access at all, no TCP and no signals
   outside its own domain (`ProgramRun.confinement` says whether it held). What the
   interpreter would print itself (warnings, re.DEBUG) goes nowhere.
Not covered: kernel or CPython exploits that escape both layers, and timing side channels.
Where neither namespace is allowed, the network is closed by the language layer alone
(`ProgramRun.network` says which).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

_CHILD = Path(__file__).with_name("sandbox_child.py")
_NOBODY = 65534


class SandboxLimits(BaseModel):
    """What one program may use."""

    cpu_seconds: int = Field(default=5, ge=1, le=600)
    """CPU time; past it the kernel stops the process."""
    wall_seconds: float = Field(default=10.0, gt=0, le=600)
    """Time from start to finish (a program that waits uses no CPU)."""
    memory_bytes: int = Field(default=512 * 2**20, ge=64 * 2**20)
    """Address space of the whole process, Python included (about 40 MiB of it)."""
    output_chars: int = Field(default=10_000, ge=1, le=10_000_000)
    """Most characters the program may print."""
    program_chars: int = Field(default=20_000, ge=1, le=1_000_000)
    """Longest program accepted."""
    file_bytes: int = Field(default=2**20, ge=0)
    """Largest file the process may write (it has no way to open one; a second guard)."""


class ProgramRun(BaseModel):
    """What running one program gave."""

    output: str = ""
    """What it printed (up to the limit)."""
    error: str | None = None
    """Why it failed or was stopped, or None."""
    stopped: bool = False
    """Whether a limit of time or CPU, or the process, stopped it, rather than what it
    computed: another try on a quieter machine may succeed."""
    network: str = "language only"
    """How the network was closed: "namespace", "user namespace" or "language only"."""
    confinement: str = "none"
    """What confined the process beyond its limits: "landlock N" (Landlock ABI N: no file
    access, no TCP, no signals outside) or "no landlock" (older kernels, some containers)."""

    @property
    def failed(self) -> bool:
        return self.error is not None


@functools.cache
def sandbox_identity() -> str:
    """What decides how a program runs: the Python and RestrictedPython versions and the child
    script (its allowed modules and guards). A failure stored under one identity (the call
    cache) is not replayed under another."""
    child = hashlib.sha256(_CHILD.read_bytes()).hexdigest()[:16]
    restricted = importlib.metadata.version("RestrictedPython")
    python = ".".join(map(str, sys.version_info[:3]))
    return f"python {python}, RestrictedPython {restricted}, sandbox {child}"


def run_python(program: str, limits: SandboxLimits | None = None) -> ProgramRun:
    """Run `program` in the sandbox and return what it printed, or why it failed. Never raises
    for anything the program does."""
    limits = limits or SandboxLimits()
    if len(program) > limits.program_chars:
        return ProgramRun(error=f"the program is over {limits.program_chars:,} characters")
    folder = Path(tempfile.mkdtemp(prefix="moot-program-"))
    try:
        if os.getuid() == 0:
            os.chown(folder, _NOBODY, _NOBODY)
        return _run_child(program, limits, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_STDERR_KEPT = 64 * 1024
_PAST_WALL = "the program ran past {:g} s and was stopped"


def _stdout_cap(limits: SandboxLimits) -> int:
    """Most bytes of stdout a well-behaved child writes: its JSON, output escaped (up to 12
    bytes a character as a surrogate pair of \\uXXXX), error and network."""
    return 12 * limits.output_chars + 64 * 1024


def _run_child(program: str, limits: SandboxLimits, folder: Path) -> ProgramRun:
    try:
        source = program.encode("utf-8")
    except UnicodeEncodeError as error:
        return ProgramRun(error=f"the program is not valid text: {error}")
    settings = limits.model_dump(exclude={"wall_seconds"})
    process = subprocess.Popen(
        [sys.executable, "-I", "-B", str(_CHILD), json.dumps(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=folder,
        env={},
        start_new_session=True,
    )
    try:
        read = _communicate(process, source, limits)
    finally:
        _kill_group(process)  # anything it left behind in its session
    if isinstance(read, str):
        return ProgramRun(error=read, stopped=True)
    return _outcome(process.returncode, read[0], read[1], limits)


def _communicate(
    process: subprocess.Popen[bytes], source: bytes, limits: SandboxLimits
) -> tuple[bytes, bytes] | str:
    """The child's stdout and stderr, or why it was stopped: past its wall-clock limit, or
    writing more than it may (the parent holds at most _stdout_cap(limits) bytes of stdout and
    keeps the first _STDERR_KEPT bytes of stderr)."""
    assert process.stdin and process.stdout and process.stderr
    deadline = time.monotonic() + limits.wall_seconds
    kept = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
    sent = 0
    os.set_blocking(process.stdin.fileno(), False)
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdin, selectors.EVENT_WRITE)
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return _PAST_WALL.format(limits.wall_seconds)
            for key, _ in selector.select(left):
                if key.fileobj is process.stdin:
                    try:
                        sent += os.write(key.fd, source[sent : sent + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading: what it read is what runs
                        sent = len(source)
                    if sent >= len(source):
                        selector.unregister(process.stdin)
                        process.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fd]
                if key.fd == process.stderr.fileno():
                    buffer += chunk[: max(_STDERR_KEPT - len(buffer), 0)]  # keep its start
                elif len(buffer) + len(chunk) > _stdout_cap(limits):
                    return "the program's process wrote more than a program can print"
                else:
                    buffer += chunk
    try:
        process.wait(max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        return _PAST_WALL.format(limits.wall_seconds)
    return bytes(kept[process.stdout.fileno()]), bytes(kept[process.stderr.fileno()])


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def _text(value: object) -> str:
    """`value` as text that encodes (a program can print lone surrogates: chr(0xD800))."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _outcome(code: int, stdout: bytes, stderr: bytes, limits: SandboxLimits) -> ProgramRun:
    if code == -signal.SIGXCPU or code == -signal.SIGKILL:
        return ProgramRun(
            error=f"the program used more than {limits.cpu_seconds} s of CPU", stopped=True
        )
    try:
        result = json.loads(stdout.decode("utf-8", "replace"))
        error = result.get("error")
        return ProgramRun(
            output=_text(result.get("output", ""))[: limits.output_chars],
            error=None if error is None else _text(error)[:2000],
            stopped=str(error).startswith("MemoryError"),  # where depends on the machine
            network=_text(result.get("network", "language only"))[:100],
            confinement=_text(result.get("confinement", "none"))[:100],
        )
    except Exception:  # noqa: BLE001 - whatever the child wrote (RecursionError on "[[[[...")
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"status {code}"]
        return ProgramRun(error=f"the program's process failed: {last[0][:500]}", stopped=True)
