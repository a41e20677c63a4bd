"""The scripts in examples/ run, so they cannot rot."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "accuracy" in out or "ROC AUC" in out


def test_main_job_runs(capsys):
    from skvqgnn.__main__ import main

    assert main(["--epochs", "3", "--no-reference"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "peak memory" in out
