"""The package's import layering (STYLE.md, "Folders show the layers"): a module imports only its
own folder and floors below it, and the core only torch and the standard library."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "repro"
CORE = PACKAGE / "core"
# The floors of the package, ground floor first (STYLE.md, "Folders show the layers"): a module
# imports only its own folder and floors below it. Two folders on one floor never import each
# other: the results read run directories (rundir) and never the loops or the launcher.
FLOORS = {
    "core": 0,  # torch and the standard library only
    "data": 1, "atomic": 1, "paths": 1,  # no config (data takes steps_per_epoch from core.schedules)
    "config": 2,
    "grid": 3,
    "models": 4, "rundir": 4,  # models: where a config meets the core
    "train": 5, "results": 5,
    "transfer": 6,
    "launch": 7,
    "cli": 8, "__main__": 9,
}


def test_core_imports_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"torch"}
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            bad = [r for r in roots if r not in allowed]
            assert not bad, f"{path.name} imports {bad}"


def _internal_imports(path: Path) -> set[str]:
    """The package's own modules that ``path`` imports (relative imports resolved), as
    their first component under ``repro``: ``from ..train import checkpoint`` -> train."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts  # ("repro", "train", "probe")
    here = parts[:-1]  # the package the module is in (for __init__.py: its own)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(here[: len(here) - node.level + 1]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            names = [module] if node.module else [module + [a.name] for a in node.names]
        else:
            continue
        out |= {n[1] for n in names if len(n) > 1 and n[0] == "repro"}
    return out


def test_each_module_imports_only_floors_below_it():
    files = sorted(PACKAGE.rglob("*.py"))
    units = {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in files} - {"__init__"}
    assert units <= set(FLOORS), f"give these a floor: {sorted(units - set(FLOORS))}"
    for path in files:
        unit = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if unit == "__init__":
            continue
        for other in _internal_imports(path) - {unit}:
            assert FLOORS[other] < FLOORS[unit], (
                f"{path.relative_to(PACKAGE.parent)} imports repro.{other}, on floor {FLOORS[other]}, "
                f"not below its own ({unit}: floor {FLOORS[unit]})")


def test_the_layering_check_sees_relative_and_lazy_imports(tmp_path):
    assert {"train", "models", "config", "core", "data"} <= _internal_imports(PACKAGE / "train" / "pretrain.py")
    assert "rundir" in _internal_imports(PACKAGE / "results" / "report.py")
    assert {"launch", "results"} <= _internal_imports(PACKAGE / "cli.py")  # imported inside functions
