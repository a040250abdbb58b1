"""A calculator for agents: arithmetic expressions evaluated exactly, without ``eval``.

The expression is parsed with Python's own parser (``ast.parse(mode="eval")``) and only a small
whitelist of node kinds is walked: numbers, ``+ - * / // % **``, unary signs, parentheses and the
functions ``abs, round, min, max, sqrt, floor, ceil``. Names, attributes, calls of anything else,
subscripts, comprehensions and strings are refused, so nothing the text says can run code.
Arithmetic is exact (``fractions.Fraction``): ``0.1 + 0.2`` is 0.3 and a 30-digit product is
exact; a result is shown as an integer when it is whole, else as a decimal rounded to 12 places.
Work is bounded: expressions up to 500 characters, exponents up to 1,000 and results up to 10^1000.
"""

from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction

from ..core.errors import InputError

MAX_LENGTH = 500
MAX_EXPONENT = 1_000
MAX_DIGITS = 1_000
PLACES = 12

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(InputError):
    """The expression is not arithmetic the calculator accepts, or its value is out of bounds."""


def _sqrt(x: Fraction) -> Fraction:
    if x < 0:
        raise CalculatorError("sqrt of a negative number")
    root = math.isqrt(x.numerator * x.denominator)  # exact for perfect squares of fractions
    if Fraction(root * root, 1) == x.numerator * x.denominator:
        return Fraction(root, x.denominator)
    return Fraction(math.sqrt(x))


def _round(x: Fraction, places: Fraction = Fraction(0)) -> Fraction:
    if places.denominator != 1:
        raise CalculatorError("round's second argument must be a whole number")
    return Fraction(round(x, int(places)))


_FUNCTIONS = {"abs": (abs, 1, 1), "round": (_round, 1, 2), "min": (min, 1, None), "max": (max, 1, None),
              "sqrt": (_sqrt, 1, 1), "floor": (lambda x: Fraction(math.floor(x)), 1, 1),
              "ceil": (lambda x: Fraction(math.ceil(x)), 1, 1)}


def _check_size(value: Fraction) -> Fraction:
    if abs(value.numerator) >= 10 ** MAX_DIGITS or value.denominator >= 10 ** MAX_DIGITS:
        raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
    return value


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _value(node.left), _value(node.right)
        if exponent.denominator != 1:
            return _check_size(Fraction(float(base) ** float(exponent)))
        if abs(exponent) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {exponent} is larger than {MAX_EXPONENT}")
        if base == 0 and exponent < 0:
            raise CalculatorError("0 cannot be raised to a negative power")
        return _check_size(base ** int(exponent))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if right == 0 and type(node.op) in (ast.Div, ast.FloorDiv, ast.Mod):
            raise CalculatorError("division by zero")
        return _check_size(Fraction(_BINARY[type(node.op)](left, right)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        function, low, high = _FUNCTIONS[node.func.id]
        if not low <= len(node.args) <= (high or len(node.args)):
            most = "" if high == low else f" to {high or 'any number of'}"
            raise CalculatorError(f"{node.func.id} takes {low}{most} argument(s), got {len(node.args)}")
        return Fraction(function(*[_value(a) for a in node.args]))
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"the name {node.id!r}"
    elif isinstance(node, ast.Call):
        what = "a call of something other than abs, round, min, max, sqrt, floor, ceil"
    raise CalculatorError(f"the calculator does not accept {what}",
                          "write arithmetic: numbers, + - * / // % **, parentheses, abs/round/min/max/sqrt")


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic ``expression`` (see the module docstring)."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("the expression is empty", "pass arithmetic such as 123 * 456")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"the expression is longer than {MAX_LENGTH} characters")
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"cannot parse {expression!r} ({exc.msg})", "write arithmetic such as (3 + 4) * 5") \
            from None
    return _value(tree.body)


def show(value: Fraction) -> str:
    """An integer when whole, else a decimal with up to 12 places (trailing zeros dropped)."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    scaled = round(abs(value) * 10 ** PLACES)
    whole, frac = divmod(scaled, 10 ** PLACES)
    digits = str(frac).rjust(PLACES, "0").rstrip("0")
    return f"{sign}{whole}" + (f".{digits}" if digits else "")


def calculate(expression: str) -> str:
    """``evaluate`` then ``show``: the calculator tool's answer as text."""
    return show(evaluate(expression))
