"""The front door stays honest: CI runs exactly the README's test command; layers hold."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# layer of each top-level module or package; lower layers may not import higher ones
LAYERS = {
    "core": 0,
    "tokenizers": 1, "data": 1, "analysis": 1, "formats": 1,
    "lm": 2, "ngram": 2, "models": 2, "embeddings": 2, "kvcache": 2,
    "train": 3, "peft": 3, "align": 3,
    "wordalign": 2,
    "generate": 4, "quant": 4,
    "retrieval": 5, "eval": 5, "classify": 5, "agents": 5, "tagging": 5,
    "cli": 6, "serve": 6,
}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    blocks = readme_commands()
    assert len(blocks) >= 2, "README must show the set-up command and the test command"
    test_command = blocks[1].strip()
    assert test_command in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(REPO / "lmlab").with_suffix("")
    package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}".strip(".") for a in node.names]
                out += names
            elif node.module and node.module.startswith("lmlab."):
                out.append(node.module[len("lmlab."):])
        elif isinstance(node, ast.Import):
            out += [a.name[len("lmlab."):] for a in node.names if a.name.startswith("lmlab.")]
    return out


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in (REPO / "lmlab").rglob("*.py"):
        rel = path.relative_to(REPO / "lmlab")
        top = rel.parts[0].removesuffix(".py")
        if top not in LAYERS:
            continue
        for target in _imports(path):
            target_top = target.split(".")[0]
            if target_top in LAYERS and LAYERS[target_top] > LAYERS[top]:
                bad.append(f"{rel} imports lmlab.{target}")
    assert not bad, "layer rule broken:\n" + "\n".join(bad)
