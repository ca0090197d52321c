"""Built-in tools for agents (`moot.Agent(tools=[...])`, `tools: [calculator]` in society files).

`calculator` does exact arithmetic on a parsed expression: the text is parsed with Python's
`ast` and only numbers, + - * / // % ** and parentheses are evaluated, on fractions, so
1/3*3 is 1 and nothing in the text can run code. There is no `python` tool: a subprocess with
time and memory limits can be built, but not one without network access on every platform
moot runs on without root, so it is left out rather than offered unsafe.
"""

from __future__ import annotations

import ast
import importlib
import math
import operator
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from langchain_core.tools import BaseTool, tool

MAX_DIGITS = 1000
"""Results (and powers) larger than this many digits are refused, not computed."""

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


class CalculatorError(ValueError):
    """An expression the calculator does not take, said in words a model can act on."""


def calculate(expression: str) -> str:
    """The exact value of an arithmetic expression, as an integer or a decimal."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    text = text.replace(",", "")  # 1,234 is a number here, not a tuple
    if not text:
        raise CalculatorError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"{_quoted(expression)} is not an arithmetic expression") from None
    except (RecursionError, MemoryError):  # what Python's parser raises past its own limits
        raise CalculatorError(
            f"{_quoted(expression)} is too long or nested too deeply: compute it in parts"
        ) from None
    return _shown(_value(tree.body))


def _quoted(expression: str) -> str:
    """The expression in quotes, cut short: errors go back to the model, which has it already."""
    return f"'{expression}'" if len(expression) <= 80 else f"'{expression[:77]}...'"


def _value(root: ast.AST) -> Fraction:
    """The value of the tree, evaluated with a stack of its own: a sum of a thousand terms is
    a thousand levels deep, past Python's recursion limit."""
    values: list[Fraction] = []
    pending: list[tuple[ast.AST, bool]] = [(root, False)]  # (node, its operands are in values)
    while pending:
        node, ready = pending.pop()
        if isinstance(node, ast.Constant):
            values.append(_number(node.value))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            if not ready:
                pending += [(node, True), (node.operand, False)]
            elif isinstance(node.op, ast.USub):
                values.append(-values.pop())
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            if not ready:
                pending += [(node, True), (node.right, False), (node.left, False)]
            else:
                right, left = values.pop(), values.pop()
                values.append(_operation(node.op, left, right))
        else:
            raise CalculatorError("only numbers and + - * / // % ** ( ) are allowed")
    return values[0]


def _number(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculatorError("only numbers and + - * / // % ** ( ) are allowed")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError(
                "a number with a decimal point or an exponent is over 1.8e308: write it as a "
                "whole number"
            )
        return _checked(Fraction(str(value)))
    return _checked(Fraction(value))


def _operation(op: ast.operator, left: Fraction, right: Fraction) -> Fraction:
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
        raise CalculatorError("division by zero")
    if isinstance(op, ast.Pow):
        return _power(left, right)
    return _checked(_BINARY[type(op)](left, right))


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise CalculatorError("only whole powers are exact; use a whole exponent")
    size = max(len(str(abs(base.numerator))), len(str(base.denominator)))
    if abs(exponent.numerator) * size > MAX_DIGITS:
        raise CalculatorError(f"the result would have more than {MAX_DIGITS} digits")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero")
    return _checked(base**exponent.numerator)


def _checked(value: Fraction) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
    return value


def _shown(value: Fraction) -> str:
    """An integer as it is; a fraction as a decimal (exact when it terminates, else 12
    significant digits)."""
    if value.denominator == 1:
        return str(value.numerator)
    exact = f"{float(value):.12g}"
    return exact if Fraction(exact) == value else exact + " (rounded)"


@tool("calculator")
def calculator(expression: str) -> str:
    """Exact arithmetic: evaluate one expression of numbers with + - * / // % ** and
    parentheses (no names or units). Returns the number."""
    # No example expression here: forced to call with nothing to compute, small models copy
    # it ("(12 + 7) * 3" was 69 of the 1.5B's 124 reason-first calls on GSM8K).
    return calculate(expression)


calculator.metadata = {
    "moot_example": {  # a worked example, shown to models too small to call tools without one
        "question": "A library had 5210 books and lent out 1875. How many books are left?",
        "arguments": {"expression": "5210 - 1875"},
        "result": "3335",
        "answer": "5210 - 1875 = 3335, so 3335 books are left.",
    }
}

BUILT_IN: dict[str, BaseTool] = {"calculator": calculator}
"""Tools a society file can name by their name alone."""


def as_tool(item: Any) -> BaseTool:
    """A LangChain tool from a tool, a plain function, a built-in name or "module:attribute"."""
    if isinstance(item, BaseTool):
        return item
    if isinstance(item, str):
        if item in BUILT_IN:
            return BUILT_IN[item]
        module_name, colon, attribute = item.partition(":")
        if not colon:
            known = ", ".join(BUILT_IN)
            raise ValueError(
                f"unknown tool '{item}': built-in tools are {known}; or MODULE:NAME, or an MCP "
                "server's tools: mcp:COMMAND or mcp:URL"
            )
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"tool '{item}' cannot be imported: {error}") from None
        return as_tool(found)
    if callable(item):
        if not (getattr(item, "__doc__", None) or "").strip():
            raise ValueError(
                f"tool function {getattr(item, '__name__', item)!r} needs a docstring: the model "
                "reads it to know what the tool does"
            )
        made: BaseTool = tool(item)
        return made
    raise ValueError(f"{item!r} is not a tool, a function or a tool name")
