"""The package's parts stand in the order design.md gives, and no import runs against it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddad"
# Lowest first; a module may import its own part and the parts below it, never above.
FLOORS = [
    ("ddad.errors", "ddad.progress"),
    ("ddad.data",),
    ("ddad.diffusion",),
    ("ddad.maps",),
    ("ddad.evaluation",),
    ("ddad.params",),
    ("ddad.detect",),
    ("ddad.tools",),
    ("ddad.cli",),
]
PARTS = ["data", "diffusion", "maps", "evaluation", "tools"]


def floor(module: str) -> int:
    """The floor of a dotted ddad module name (``ddad`` itself, the package's door, is none)."""
    for level, parts in enumerate(FLOORS):
        if any(module == part or module.startswith(part + ".") for part in parts):
            return level
    raise AssertionError(f"{module} stands on no floor: add it to FLOORS and design.md")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def ddad_imports(path: Path) -> set[str]:
    """Every ddad module ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ddad.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ddad"):
            if node.module == "ddad":  # from ddad import data: the part, or the door's names
                found |= {f"ddad.{alias.name}" for alias in node.names if alias.name in PARTS}
            else:
                found.add(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if module_name(p) != "ddad")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_runs_up_a_floor(path: Path):
    here = floor(module_name(path))
    upward = sorted(m for m in ddad_imports(path) if floor(m) > here)
    assert not upward, f"{module_name(path)} imports {upward} from above its floor"


def test_each_part_is_a_package_that_says_its_job_and_what_it_may_import():
    for part in PARTS:
        doc = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"ddad/{part}/__init__.py needs its docstring"


def test_the_top_level_holds_only_the_shared_and_the_commands():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli", "detect", "errors", "params", "progress"]
