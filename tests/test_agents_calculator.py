"""The calculator equals Python's own arithmetic (exact rationals) and refuses everything else."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from lmlab.agents.calculator import CalculatorError, calculate, evaluate, show


def random_expression(rng: random.Random, depth: int = 0) -> str:
    if depth > 2 or rng.random() < 0.3:
        return str(rng.choice([rng.randint(0, 99999), rng.randint(1, 9)]))
    op = rng.choice(["+", "-", "*", "/", "//", "%"])
    return f"({random_expression(rng, depth + 1)} {op} {random_expression(rng, depth + 1)})"


def python_value(expression: str) -> Fraction:
    """Python's own evaluation over exact rationals: every literal and every floor division's result
    becomes a Fraction (Fraction // Fraction is an int, and int / int a float)."""
    import ast

    class Exact(ast.NodeTransformer):
        def visit_Constant(self, node):  # noqa: N802
            return ast.Call(ast.Name("Fraction", ast.Load()), [node], [])

        def visit_BinOp(self, node):  # noqa: N802
            self.generic_visit(node)
            if isinstance(node.op, ast.FloorDiv):
                return ast.Call(ast.Name("Fraction", ast.Load()), [node], [])
            return node

    tree = ast.fix_missing_locations(Exact().visit(ast.parse(expression, mode="eval")))
    return eval(compile(tree, "<oracle>", "eval"), {"Fraction": Fraction})  # noqa: S307  (test oracle)


def test_equals_python_on_random_expressions():
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        expression = random_expression(rng)
        try:
            expected = python_value(expression)
        except ZeroDivisionError:
            with pytest.raises(CalculatorError, match="division by zero"):
                evaluate(expression)
            continue
        assert evaluate(expression) == expected, expression
        checked += 1
    assert checked > 300


def test_exact_and_readable_results():
    assert calculate("123456 * 789") == "97406784"
    assert calculate("0.1 + 0.2") == "0.3"
    assert calculate("1 / 3") == "0.333333333333"
    assert calculate("-7 / 2") == "-3.5"
    assert calculate("2 ** 100") == str(2 ** 100)
    assert calculate("sqrt(144) + abs(-3) + max(1, 9, 4) + round(2.5)") == str(12 + 3 + 9 + 2)
    assert calculate("3 × 4 ÷ 2") == "6" and calculate("2^10") == "1024"
    assert show(Fraction(-1, 8)) == "-0.125"


@pytest.mark.parametrize("expression, problem", [
    ("__import__('os').system('ls')", "does not accept"),
    ("open('x')", "does not accept"),
    ("x + 1", "the name 'x'"),
    ("(1).__class__", "does not accept"),
    ("[1, 2][0]", "does not accept"),
    ("'a' * 3", "does not accept"),
    ("9 ** 9 ** 9", "exponent"),
    ("10 ** 999 * 10 ** 999", "more than 1000 digits"),
    ("1 / 0", "division by zero"),
    ("1 +", "cannot parse"),
    ("", "empty"),
    ("1" * 600, "longer than 500"),
    ("sqrt(-1)", "negative"),
])
def test_refuses_what_is_not_bounded_arithmetic(expression, problem):
    with pytest.raises(CalculatorError, match=problem):
        evaluate(expression)
