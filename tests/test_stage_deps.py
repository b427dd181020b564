"""Editing a module re-runs every stage whose outputs it shapes: each stage in dvc.yaml lists
as deps the ddad and stages modules its command reaches by imports, directly or through others.

Only modules that cannot change what a stage writes may be left out (OUTPUT_NEUTRAL, and per
stage NAMES_ONLY, modules imported for a constant or a helper that does not touch the outputs);
the traversal does not follow them either. A folder listed as a dep covers every module in it,
and importing a registry package reaches every module in it (REGISTRIES).
"""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

OUTPUT_NEUTRAL = {
    "ddad/errors.py": "the wording of errors",
    "ddad/progress.py": "progress bars",
    "ddad/diffusion/fitting.py": "batch sizes, which results never depend on",
    "ddad/data/download.py": "how bytes arrive; their sha256 pins them",
    "stages/params.py": "reading params.yaml",
    "stages/common.py": "paths and launching; a dep of each stage that uses model_input",
}
# packages whose __init__ imports every module in them
REGISTRIES = {"ddad/maps/kinds": "the map kinds, each registered on import"}
# deps whose own code shapes outputs, but whose imports serve only the params check
NOT_FOLLOWED = {"ddad/params.py": "builds the settings objects; imports the schema's choices"}
NAMES_ONLY = {
    "check_params": {"ddad/diffusion/engine.py": "resolve_device; its output is a constant file"},
    "fetch_model": {
        "ddad/data/imageio.py": "ddad/diffusion/models.py's input-size helpers",
        "ddad/data/layout.py": "the folder the pretrained weights go to",
    },
    "train": {"ddad/diffusion/engine.py": "resolve_device"},
    "detector": {"ddad/evaluation/viz.py": "ddad/detect.py's overlays, which it draws none of"},
    "reconstruct": {  # it asks a map kind only whether it compares with reconstructions
        f"ddad/maps/{module}.py": "what the kinds map with"
        for module in ("sources", "search", "position_gaussian", "scoring", "good_images")
        + ("backbone", "denoiser")
    }
    | {
        f"ddad/diffusion/{module}.py": "what the kinds map with"
        for module in ("inversion", "feature_denoiser", "train")
    },
    "denoiser": {  # it asks the map kinds only whether one reads the denoiser
        "ddad/diffusion/inversion.py": "what the kinds map with",
        "ddad/maps/position_gaussian.py": "what the kinds map with",
        "ddad/diffusion/reconstruct.py": "the kinds' reconstruction plans",
        "ddad/diffusion/engine.py": "resolve_device",
        "ddad/diffusion/models.py": "save_atomically, how the file is written",
    },
    "evaluate": {
        "ddad/data/archive.py": "reached through ddad/data/mvtec.py, for its category names",
        "ddad/data/folders.py": "reached through ddad/data/mvtec.py, for its category names",
    },
}


def _imports(path: Path) -> set[str]:
    """The repository's modules (as paths) that ``path`` imports, packages left out."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    found = {name.replace(".", "/") + ".py" for name in names}
    for registry in REGISTRIES:
        if registry.replace("/", ".") in names:
            found |= {str(m.relative_to(REPO)) for m in (REPO / registry).glob("*.py")}
    return {module for module in found if (REPO / module).is_file() and "__init__" not in module}


def _reached(module: str, skipped: set[str]) -> set[str]:
    seen: set[str] = set()
    waiting = _imports(REPO / module) - skipped
    while waiting:
        current = waiting.pop()
        seen.add(current)
        if current not in NOT_FOLLOWED:
            waiting |= _imports(REPO / current) - skipped - seen
    return seen


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_depends_on_every_module_that_shapes_its_outputs(name):
    stage = STAGES[name].get("do", STAGES[name])
    module = stage["cmd"].split()[2].replace(".", "/") + ".py"
    deps = {dep for dep in stage["deps"] if isinstance(dep, str)}
    skipped = set(OUTPUT_NEUTRAL) | set(NAMES_ONLY.get(name, {}))
    assert module in deps
    missing = {m for m in _reached(module, skipped) if not _covered(m, deps)}
    assert missing == set()


def _covered(module: str, deps: set[str]) -> bool:
    """Whether ``module`` is a dep, or lies in a folder that is."""
    return module in deps or any(module.startswith(dep.rstrip("/") + "/") for dep in deps)
