"""The package's import layering (README, "Module map"): each module imports only modules of
lower layers, so there is no import cycle, deferred or not. The imports are read from the
source (function-level imports included), not from what Python happened to load."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skvqgnn"

#: Lowest first. A module may import the modules of the layers below its own.
LAYERS = [
    {"_version", "graph"},  # the validated graph and the version stamp
    {"vq", "sketch", "samplers", "metrics", "datasets", "distributed"},  # foundation
    {"attention"},  # softmax attention, the learnable convolutions' arithmetic
    {"convolutions"},  # the convolution kinds (Eq. 6, Eq. 7) and the batches they make
    {"layers"},  # the network: backbones and the VQ-GNN stack
    {"inference", "shards"},  # whole-graph passes; a partitioned graph's parts
    {"training"},  # the training loop, its task and callbacks, the codebook updates
    {"_base"},  # the estimators' shared parameters, fit and predict
    {"classifier", "link"},  # the estimators
    {"model_selection", "preprocessing", "persistence"},  # tools around the estimators
    {"__init__"},  # the package's public names
    {"__main__"},  # the command line
]


def _layer_of(module: str) -> int:
    (layer,) = [i for i, names in enumerate(LAYERS) if module in names]
    return layer


def internal_imports(path: Path) -> set[str]:
    """The package modules that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import name: a module, or a name of the package's __init__
                names = {a.name for a in node.names}
                modules = {n for n in names if (PACKAGE / f"{n}.py").exists()}
                found |= modules or {"__init__"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skvqgnn"):
            found.add((node.module.split(".") + ["__init__"])[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "skvqgnn":
                    found.add((alias.name.split(".") + ["__init__"])[1])
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert {m for names in LAYERS for m in names} == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_lower_layers(module):
    upward = {
        dep
        for dep in internal_imports(PACKAGE / f"{module}.py")
        if dep != module and _layer_of(dep) >= _layer_of(module)
    }
    assert not upward, f"{module} (layer {_layer_of(module)}) imports {sorted(upward)}"


def test_the_check_sees_a_deferred_import(tmp_path):
    """Control: an import inside a function counts as much as one at the top."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from .persistence import load\n    from . import graph\n")
    assert internal_imports(path) == {"persistence"} | ({"graph"} & set(MODULES))
