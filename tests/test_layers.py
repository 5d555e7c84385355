"""Imports point one way (shared/STYLE.md): only store/ talks to redis, only api/ to flask,
only training/ to pyspark, only server.py to granian; api -> service -> store/model, so the API
never reaches the store, training never imports serving, the model imports nothing above it;
nothing that serves, trains or archives imports local_processes (the demo's and the tests')."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "nextwatch"

# third-party module -> the sub-package (or module) allowed to import it
OWNERS = {"redis": {"store"}, "flask": {"api"}, "werkzeug": {"api"}, "pyspark": {"training"},
          "granian": {"server.py"}}
SERVING = {"api", "service", "store", "model", "server.py"}
# layer -> the nextwatch layers it must never import
# (local_processes runs the parts as processes for the demo and the tests: nothing that serves or
# trains may lean on it.)
FORBIDDEN = {
    "api": {"store", "training", "evaluation", "local_processes"},
    "service": {"api", "training", "evaluation", "server", "local_processes"},
    "store": {"api", "service", "training", "server", "local_processes"},
    "model": {"api", "service", "store", "training", "evaluation", "server", "datasets", "local_processes"},
    "training": {"api", "service", "server", "local_processes"},
    "evaluation": {"api", "service", "store", "training", "server", "local_processes"},
    "server": {"training", "local_processes"},
    "archiving": {"api", "service", "local_processes"},
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
    return names


def home_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def test_third_party_imports_stay_in_their_layer():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in OWNERS and home_of(path) not in OWNERS[top]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert wrong == []


def test_serving_never_imports_training_and_model_is_pure():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        names = imports_of(path)
        if home_of(path) in SERVING and any(n.startswith("nextwatch.training") for n in names):
            wrong.append(f"{path.relative_to(PACKAGE)} imports training")
        if home_of(path) == "model" and any(
            n.startswith(("nextwatch.store", "nextwatch.api", "nextwatch.service")) for n in names
        ):
            wrong.append(f"{path.relative_to(PACKAGE)} (model) imports a serving layer")
        if home_of(path) == "store" and any(n.startswith(("nextwatch.api", "nextwatch.service")) for n in names):
            wrong.append(f"{path.relative_to(PACKAGE)} (store) imports a layer above it")
    assert wrong == []


def test_layers_point_one_way():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        layer = home_of(path).removesuffix(".py")
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "nextwatch" and len(parts) > 1 and parts[1] in FORBIDDEN.get(layer, ()):
                wrong.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {name}")
    assert wrong == []


def test_the_check_sees_imports():
    """Guard against a walker that finds nothing: the store really imports redis."""
    assert "redis" in imports_of(PACKAGE / "store" / "connection.py")
    assert "nextwatch.errors" in imports_of(PACKAGE / "store" / "connection.py")
    assert "nextwatch.service" in imports_of(PACKAGE / "api" / "app.py")
