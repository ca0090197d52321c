"""The sandbox's child process: confine itself, then run one restricted program.

Started by `moot.tools.sandbox.run_python` as `python -I -B sandbox_child.py LIMITS_JSON`, with
an empty environment, in a fresh temporary folder, in a session of its own. It reads the
program on stdin and writes one JSON object on stdout: {"output": ..., "error": ...}. It
imports nothing of moot (a standalone script: starting it costs only Python and
RestrictedPython). The order matters: everything that needs privileges or files (the network
namespace, importing the allowed modules) happens before it drops to an unprivileged user and
sets its limits, and all of that before the program runs.
"""

from __future__ import annotations

import ast
import ctypes
import io
import json
import os
import resource
import sys
import types
from typing import Any

from RestrictedPython import compile_restricted_exec, safe_builtins
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
)

ALLOWED_MODULES = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "datetime",
    "re",
    "string",
    "operator",
    "heapq",
    "bisect",
    "random",
)
"""What a program may import: pure computation. Each is handed over as a copy holding only its
public functions, classes and constants, never modules it imported itself (`statistics.sys`
would lead to `sys.modules["os"]`)."""

WITHHELD = {
    "attrgetter",
    "methodcaller",
    "Formatter",
    # functools: update_wrapper/wraps get and set attributes named by strings (any name, "_"
    # ones included); cached_property reads an instance's __dict__ under a settable attrname;
    # together they read any attribute of any object (`len.__self__` is the builtins module).
    # singledispatch(...).register evaluates string annotations with eval() (typing).
    "update_wrapper",
    "wraps",
    "cached_property",
    "singledispatch",
    "singledispatchmethod",
    "partialmethod",
    "WRAPPER_ASSIGNMENTS",
    "WRAPPER_UPDATES",
    "RLock",
    "GenericAlias",
    "get_cache_token",
    "recursive_repr",
}
"""Names of allowed modules that are not handed over: `operator.attrgetter("__class__")` and
`methodcaller` read attributes by a string the compiler never sees (past the "_" rule), and
`string.Formatter().format("{0.__class__}", x)` does what `str.format` is refused for."""

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_NOBODY = 65534
_EXTRA_BUILTINS = [
    "abs",
    "all",
    "any",
    "bool",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "format",
    "frozenset",
    "int",
    "isinstance",
    "len",
    "list",
    "map",
    "max",
    "min",
    "pow",
    "range",
    "reversed",
    "round",
    "set",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "bin",
    "hex",
    "oct",
    "chr",
    "ord",
    "complex",
    "iter",
    "next",
    "slice",
]


class OutputLimit(Exception):
    """The program printed more than its limit."""


class Printed:
    """Where every `print` of the program goes (functions' prints included), up to a limit."""

    def __init__(self, limit: int) -> None:
        self.buffer = io.StringIO()
        self.limit = limit

    def __call__(self, _getattr_: Any = None) -> Printed:  # RestrictedPython's `_print_`
        return self

    def write(self, text: str) -> None:
        if self.buffer.tell() + len(text) > self.limit:
            raise OutputLimit(f"the program printed more than {self.limit:,} characters")
        self.buffer.write(text)

    def flush(self) -> None:
        pass

    def _call_print(self, *objects: Any, **options: Any) -> None:
        options.pop("file", None)
        print(*objects, file=self, **options)


class _NoAugmentedItems(ast.NodeTransformer):
    """`a[i] += x` as `a[i] = a[i] + x`: RestrictedPython refuses augmented assignment to items
    and attributes, which counting code writes all the time."""

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        if isinstance(node.target, ast.Name):
            return node
        load = _as_load(node.target)
        value = ast.BinOp(left=load, op=node.op, right=node.value)
        return ast.copy_location(ast.Assign(targets=[node.target], value=value), node)


def _as_load(target: ast.expr) -> ast.expr:
    copy = ast.parse(ast.unparse(target), mode="eval").body
    return ast.copy_location(copy, target)


def isolate_network() -> str:
    """Move into a network namespace of our own (no interfaces but a down loopback)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) == 0:
        return "namespace"
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        return "user namespace"
    return "language only"


def drop_privileges() -> None:
    """Run as nobody when started as root: no file of root's is writable or readable by mode,
    and the process limit counts nobody's processes."""
    if os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(_NOBODY)
    os.setuid(_NOBODY)


_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK = (
    444,
    445,
    446,
)  # create_ruleset, add_rule, restrict_self (same on x86-64 and arm64)


class _Ruleset(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


def confine() -> str:
    """No new privileges (setuid binaries run as us), then a Landlock domain that refuses every
    file access (the program has no use for files and everything it needs is imported), TCP
    bind and connect, and signals and abstract sockets outside the domain. Returns what held."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    abi = libc.syscall(_SYS_LANDLOCK[0], None, 0, 1)
    if abi < 1:
        return "no landlock"
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
    fs |= 1 << 15 if abi >= 5 else 0
    rules = _Ruleset(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = ctypes.sizeof(rules) if abi >= 6 else (16 if abi >= 4 else 8)
    fd = libc.syscall(_SYS_LANDLOCK[0], ctypes.byref(rules), size, 0)
    if fd < 0 or libc.syscall(_SYS_LANDLOCK[2], fd, 0) != 0:
        return "no landlock"
    os.close(fd)
    return f"landlock {abi}"


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def quiet_streams() -> Any:
    """What the interpreter and the modules print themselves goes nowhere: a program can make
    them print without end, past `Printed` (re.compile(p, re.DEBUG) prints to sys.stdout; a
    generator that swallows GeneratorExit makes CPython print to sys.stderr). Returns the real
    stdout, for the result."""
    stdout = sys.stdout
    sys.stdout = sys.stderr = _Discard()
    sys.unraisablehook = lambda unraisable: None
    import warnings

    warnings.simplefilter("ignore")
    return stdout


def set_limits(limits: dict[str, int]) -> None:
    cpu = limits["cpu_seconds"]
    memory = limits["memory_bytes"]
    for kind, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"])),
        (resource.RLIMIT_NPROC, (0, 0)),
        (resource.RLIMIT_NOFILE, (16, 16)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(kind, value)


ONLY = {"functools": {"reduce", "partial", "lru_cache", "cache", "cmp_to_key", "total_ordering"}}
"""Modules handed over by an allowlist: functools is mostly reflection."""


def public_copy(name: str) -> types.ModuleType:
    module = __import__(name)
    withheld = [
        getattr(sys.modules[m], n)
        for m, n in (
            ("operator", "attrgetter"),
            ("operator", "methodcaller"),
            ("string", "Formatter"),
            ("functools", "update_wrapper"),
            ("functools", "cached_property"),
            ("functools", "singledispatch"),
        )
    ]
    copy = types.ModuleType(name)
    for attribute, value in vars(module).items():
        public = not attribute.startswith("_") and attribute not in WITHHELD
        public = public and attribute in ONLY.get(name, {attribute})
        if any(value is unsafe for unsafe in withheld):
            public = False
        if public and not isinstance(value, types.ModuleType):
            setattr(copy, attribute, value)
    return copy


def restricted_globals(printed: Printed) -> dict[str, Any]:
    modules = {name: public_copy(name) for name in ALLOWED_MODULES}

    def guarded_import(name: str, *args: Any, **kwargs: Any) -> types.ModuleType:
        if name not in modules:
            allowed = ", ".join(ALLOWED_MODULES)
            raise ImportError(f"import of {name!r} is not allowed (allowed: {allowed})")
        fromlist = args[2] if len(args) > 2 else kwargs.get("fromlist")
        for wanted in fromlist or ():
            if not hasattr(modules[name], wanted):  # else Python takes sys.modules[name.wanted]
                raise ImportError(f"cannot import name {wanted!r} from {name!r}")
        return modules[name]

    builtins = dict(safe_builtins)
    import builtins as real

    builtins.update({name: getattr(real, name) for name in _EXTRA_BUILTINS})
    builtins["__import__"] = guarded_import
    return {
        "__builtins__": builtins,
        "__name__": "__main__",
        "__metaclass__": type,
        "_print_": printed,
        "_getattr_": safer_getattr,
        "_getitem_": lambda container, key: container[key],
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": _writable,
        "_inplacevar_": _inplace,
    }


def _writable(target: Any) -> Any:
    """Any object may be written to: the process is thrown away after the program, and the
    language layer already refuses attributes starting with "_" (RestrictedPython's default
    guard, meant for Zope's persistent objects, refuses `Counter()["a"] = 1`)."""
    return target


def _inplace(op: str, left: Any, right: Any) -> Any:
    import operator

    operations = {
        "+=": operator.add, "-=": operator.sub, "*=": operator.mul, "/=": operator.truediv,
        "//=": operator.floordiv, "%=": operator.mod, "**=": operator.pow,
        "&=": operator.and_, "|=": operator.or_, "^=": operator.xor,
        "<<=": operator.lshift, ">>=": operator.rshift,
    }  # fmt: skip
    return operations[op](left, right)


def run(source: str, limits: dict[str, int]) -> dict[str, Any]:
    printed = Printed(limits["output_chars"])
    try:
        tree = _NoAugmentedItems().visit(ast.parse(source, "<program>"))
        ast.fix_missing_locations(tree)
        compiled = compile_restricted_exec(tree, "<program>")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        return {"output": "", "error": f"the program does not parse: {error}"}
    if compiled.errors or compiled.code is None:
        return {"output": "", "error": "the program is not allowed: " + "; ".join(compiled.errors)}
    try:
        exec(compiled.code, restricted_globals(printed))  # noqa: S102 - confined, see module doc
    except SystemExit:
        pass
    except BaseException as error:  # noqa: BLE001 - reported to the parent as the turn's error
        output = printed.buffer.getvalue()
        return {"output": output, "error": f"{type(error).__name__}: {error}"[:2000]}
    return {"output": printed.buffer.getvalue(), "error": None}


def main() -> None:
    limits = json.loads(sys.argv[1])
    network = isolate_network()
    for name in ALLOWED_MODULES:  # imported while Python's files are readable (as root, the
        __import__(name)  # interpreter may live in root's home, closed to nobody)
    source = sys.stdin.read(limits["program_chars"] + 1)
    sys.stdin.close()
    drop_privileges()
    confinement = confine()
    set_limits(limits)
    stdout = quiet_streams()
    sys.setrecursionlimit(2000)
    if len(source) > limits["program_chars"]:
        chars = limits["program_chars"]
        result = {"output": "", "error": f"the program is over {chars:,} characters"}
    else:
        result = run(source, limits)
    result["network"] = network
    result["confinement"] = confinement
    stdout.write(json.dumps(result))
    stdout.flush()


if __name__ == "__main__":
    main()
