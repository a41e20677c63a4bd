"""The scripts in examples/ run and still reach what they print, so they cannot rot.

Each script's printed figures are read back with a pattern and checked against a floor the
script clears with a margin (measured at seed 0: the figure in the comment). A new example needs
an entry in ``FIGURES``.
"""

import re
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
NUMBER = r"(\d+\.\d+)"

#: Per script: (pattern capturing a figure, floor); every pattern must match at least once and
#: every match must reach its floor.
FIGURES: dict[str, list[tuple[str, float]]] = {
    "quickstart.py": [
        (rf"^test accuracy {NUMBER}", 0.75),  # 0.805
    ],
    "custom_backbone.py": [
        (rf"two-hop: Cora test accuracy {NUMBER}", 0.70),  # 0.772
        (rf"cosine: Cora test accuracy {NUMBER}", 0.75),  # 0.826
    ],
    "link_prediction.py": [
        (rf"^test ROC AUC {NUMBER}", 0.80),  # 0.900, 20 epochs
        (rf"refitted model, test ROC AUC {NUMBER}", 0.55),  # 0.647, 5 epochs
    ],
    "cross_validation.py": [
        (rf"cross-validated accuracy {NUMBER}", 0.75),  # 0.831
        (rf"test accuracy {NUMBER}", 0.78),  # 0.854
    ],
    "grid_search.py": [
        (rf"CV accuracy {NUMBER}", 0.75),  # 0.817 to 0.819 for every candidate
        (rf"test accuracy {NUMBER}", 0.78),  # 0.851
    ],
    "save_and_load.py": [
        (rf"joblib: .*identical probabilities: True, test accuracy {NUMBER}", 0.75),  # 0.813
        (rf"weights-only: .*identical probabilities: True, test accuracy {NUMBER}", 0.75),
    ],
    "large_graph.py": [
        (rf"test accuracy {NUMBER}", 0.80),  # 0.852
        (r"peak memory (\d+) MiB", 1.0),  # MiB after the fit: 617 on the CPU
    ],
}


def test_every_example_has_figures():
    assert sorted(FIGURES) == [path.name for path in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    for pattern, floor in FIGURES[path.name]:
        found = [float(x) for x in re.findall(pattern, out, flags=re.MULTILINE)]
        assert found, f"{path.name} printed nothing matching {pattern!r}:\n{out}"
        assert min(found) >= floor, f"{path.name}: {pattern!r} gave {found} < {floor}"


def test_main_job_runs(capsys):
    from skvqgnn.__main__ import main

    assert main(["--epochs", "3", "--no-reference"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "peak memory" in out
