"""The front door stays honest: CI runs exactly the README's test command; layers hold, and the three
statements of them (this file, the README's "Layout" table, the ``lmlab`` package docstring) agree."""

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
    "retrieval": 5, "eval": 5, "classify": 5, "agents": 5, "tagging": 5, "interp": 5, "instruct": 5,
    "cli": 6, "serve": 6,
}
# "package.module:Name" strings name a class that is imported later (models/directory.py's MODEL_TYPES)
LAZY_NAME = re.compile(r"^lmlab\.([a-z_]+)[a-z_.]*:[A-Za-z_]+$")


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    blocks = readme_commands()
    assert len(blocks) >= 2, "README must show the set-up command and the test command"
    test_command = blocks[1].strip()
    assert test_command in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def _imports(source: str, rel: Path) -> list[str]:
    """The lmlab modules that ``source`` (the module at ``rel`` inside lmlab/) imports or names lazily."""
    tree = ast.parse(source)
    package = list(rel.with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}".strip(".") for a in node.names]
                out += names
            elif node.module == "lmlab":
                out += [a.name for a in node.names]
            elif node.module and node.module.startswith("lmlab."):
                out.append(node.module[len("lmlab."):])
        elif isinstance(node, ast.Import):
            out += [a.name[len("lmlab."):] for a in node.names if a.name.startswith("lmlab.")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY_NAME.match(node.value):
            out.append(node.value.split(":")[0][len("lmlab."):])
    return out


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in (REPO / "lmlab").rglob("*.py"):
        rel = path.relative_to(REPO / "lmlab")
        top = rel.parts[0].removesuffix(".py")
        if top not in LAYERS:
            continue
        for target in _imports(path.read_text(encoding="utf-8"), rel):
            target_top = target.split(".")[0]
            if target_top in LAYERS and LAYERS[target_top] > LAYERS[top]:
                bad.append(f"{rel} imports lmlab.{target}")
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def test_every_top_level_package_has_a_layer():
    tops = {p.name.removesuffix(".py") for p in (REPO / "lmlab").iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))}
    assert tops == set(LAYERS)


def _groups(layers: dict[str, int]) -> list[set[str]]:
    return [{name for name, layer in layers.items() if layer == level} for level in sorted(set(layers.values()))]


def test_the_readme_layout_and_the_package_docstring_state_the_same_layers():
    readme = (REPO / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "`lmlab/" in line]
    readme_groups = [set(re.findall(r"`lmlab/([a-z_]+)(?:\.py)?`", row)) for row in rows]
    assert readme_groups == _groups(LAYERS)
    import lmlab

    statement = lmlab.__doc__.split("Layers", 1)[1].split(":", 1)[1].split(".", 1)[0]
    doc_groups = [{name.strip() for name in re.split(r"[,/]", group)}
                  for group in re.split(r"[<→]", statement.replace("\n", " "))]  # "a, b < c" or "a/b → c"
    assert doc_groups == _groups(LAYERS)


def test_the_layer_check_sees_package_imports_and_lazy_class_names():
    source = 'from lmlab import serve\nfrom .. import eval\nTYPES = {"x": "lmlab.classify.finetune:ClassifierNet"}\n'
    assert set(_imports(source, Path("core/example.py"))) == {"serve", "eval", "classify.finetune"}


def test_every_readme_result_row_says_whether_ci_checks_it():
    """bench/check_readme.py classifies every row of the README's results table; its tests exist."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_readme", REPO / "bench" / "check_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows, problems = module.check()
    assert not problems, "\n".join(problems)
    assert len(rows) == len(module.readme_rows()) > 0
