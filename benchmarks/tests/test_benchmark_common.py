"""The plumbing the benchmark scripts share (``benchmarks/_common.py``): the generated region of a
script's page, each script's default page, and the committed pages, whose generated regions are
what the scripts write from the saved records (saved records only, no fits)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402
import depth  # noqa: E402
import inductive  # noqa: E402
import link_prediction  # noqa: E402
import node_classification  # noqa: E402
import peers  # noqa: E402
import scale  # noqa: E402
from _common import (  # noqa: E402
    GENERATED_END,
    GENERATED_START,
    PAGES_DIR,
    REPO_ROOT,
    generated_region,
    replace_generated,
    write_generated,
)

REGION = f"{GENERATED_START}\nold\n{GENERATED_END}"


# --------------------------------------------------------------------------------------------
# The generated region of a page
# --------------------------------------------------------------------------------------------


def test_the_region_is_replaced_in_place_and_the_hand_written_rest_kept():
    page = f"# Page\n\nbefore\n\n{REGION}\n\nafter\n"
    new = replace_generated(page, "| a |\n")
    assert new == f"# Page\n\nbefore\n\n{GENERATED_START}\n| a |\n{GENERATED_END}\n\nafter\n"
    assert generated_region(new) == "| a |"
    assert replace_generated(new, "| a |") == new  # rewriting the same region changes nothing
    # a page that ends with the region still ends with a newline
    assert replace_generated(f"# Page\n\n{REGION}", "x") == (
        f"# Page\n\n{GENERATED_START}\nx\n{GENERATED_END}\n"
    )


def test_a_page_without_a_region_gets_one_at_its_end():
    assert generated_region("# Page\n") is None
    assert replace_generated("# Page\n\ntext\n\n", "x") == (
        f"# Page\n\ntext\n\n{GENERATED_START}\nx\n{GENERATED_END}\n"
    )
    assert replace_generated("", "x") == f"{GENERATED_START}\nx\n{GENERATED_END}\n"


def test_broken_markers_are_refused():
    with pytest.raises(ValueError, match="without <!-- generated:end -->"):
        replace_generated(f"# Page\n{GENERATED_START}\nold\n", "x")
    with pytest.raises(ValueError, match="without <!-- generated:start -->"):
        replace_generated(f"# Page\nold\n{GENERATED_END}\n", "x")
    with pytest.raises(ValueError, match="more than one"):
        generated_region(f"{REGION}\n\n{REGION}\n")


def test_write_generated_creates_the_page_and_then_keeps_its_prose(tmp_path):
    page = tmp_path / "doc" / "benchmarks" / "x.md"
    write_generated(page, "first")
    assert page.read_text() == f"{GENERATED_START}\nfirst\n{GENERATED_END}\n"
    page.write_text(f"# X\n\nprose\n\n{page.read_text()}\nnotes\n")
    write_generated(page, "second")
    assert (
        page.read_text() == f"# X\n\nprose\n\n{GENERATED_START}\nsecond\n{GENERATED_END}\n\nnotes\n"
    )


# --------------------------------------------------------------------------------------------
# Each script writes its own page
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [node_classification, link_prediction, inductive, peers])
def test_each_script_writes_its_own_page_by_default(module, monkeypatch):
    seen = []
    monkeypatch.setattr(module, "run_script", lambda args, *rest: seen.append(args.out))
    module.main([])
    assert seen == [PAGES_DIR / f"{Path(module.__file__).stem}.md"]


def test_scale_and_depth_write_their_own_pages_by_default(tmp_path, monkeypatch):
    assert scale.parse_args([]).out == PAGES_DIR / "scale.md"
    saved = tmp_path / "depth.json"
    saved.write_text("[]")
    seen = []
    monkeypatch.setattr(depth, "render", lambda *args: "x")
    monkeypatch.setattr(depth, "write_generated", lambda path, body: seen.append(path))
    depth.main(["--from-json", str(saved)])
    assert seen == [PAGES_DIR / "depth.md"]


# --------------------------------------------------------------------------------------------
# The committed pages
# --------------------------------------------------------------------------------------------


def _saved(name: str) -> tuple[dict, list[dict]]:
    return _common.merge_saved([json.loads((REPO_ROOT / "doc" / name).read_text())])


def _node_classification() -> str:
    return node_classification.render(*_saved("benchmarks.json"))


def _link_prediction() -> str:
    return link_prediction.render(*_saved("benchmarks_link.json"))


def _inductive() -> str:
    return inductive.render(*_saved("benchmarks_inductive.json"))


def _peers() -> str:
    return peers.render(*_saved("benchmarks_peers.json"))


def _scale() -> str:
    saved = json.loads((REPO_ROOT / "doc" / "benchmarks_scale.json").read_text())
    meta, records = scale.merge_saved([saved])
    plots = (REPO_ROOT / "doc" / scale.MEMORY_PLOT, REPO_ROOT / "doc" / scale.TIME_PLOT)
    return scale.render(meta, records, PAGES_DIR / "scale.md", plots)


def _depth() -> str:
    records = json.loads((REPO_ROOT / "doc" / "benchmarks_depth.json").read_text())
    return depth.render(records, sorted({r["command"] for r in records}))


PAGES = {
    "node_classification": _node_classification,
    "link_prediction": _link_prediction,
    "inductive": _inductive,
    "peers": _peers,
    "scale": _scale,
    "depth": _depth,
}
# what a line of a generated region may start with: provenance, headings, bullets, tables,
# commands, plots, a table's caption; an explanation belongs to the hand-written part
GENERATED_LINE = (
    "Produced ",
    "(regenerated from the saved records with `python benchmarks/",
    "```",
    "python benchmarks/",
    "- ",
    "### ",
    "| ",
    "|---",
    "![",
    "Ratios of medians",
    "Sizes tried",
)


@pytest.mark.parametrize("name", PAGES)
def test_each_page_has_one_region_that_its_script_writes_from_the_saved_records(name):
    page = (PAGES_DIR / f"{name}.md").read_text()
    assert page.count(GENERATED_START) == page.count(GENERATED_END) == 1
    assert page.startswith("# ") and page.index("# ") < page.index(GENERATED_START)
    region = generated_region(page)
    # the same region but for the paragraph that names the command which regenerated it
    command = re.compile(r"^\(regenerated from the saved records with `[^`]+`\)\n\n", re.M)
    assert len(command.findall(region)) == 1
    assert command.sub("", region) == PAGES[name]().strip("\n")
    for line in region.splitlines():
        assert not line or line.startswith(GENERATED_LINE), f"{name}: prose in the region: {line}"


def test_the_scale_page_shows_the_plots_next_to_it():
    region = generated_region((PAGES_DIR / "scale.md").read_text())
    for name in (scale.MEMORY_PLOT, scale.TIME_PLOT):
        assert f"](../{name})" in region
        assert (PAGES_DIR / ".." / name).resolve().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_script_shadows_an_installed_module():
    """A script runs with ``benchmarks/`` first on ``sys.path``, so a script named like an
    installed package would be imported in its place (``distributed.py`` took the place of
    Dask's ``distributed``, and ``from dask.distributed import Client`` failed)."""
    import importlib.util
    import subprocess

    here = Path(__file__).resolve().parents[1]
    stems = sorted(p.stem for p in here.glob("*.py"))
    code = (
        "import importlib.util, sys; "
        "print(' '.join(s for s in sys.argv[1:] if importlib.util.find_spec(s) is not None))"
    )
    # a fresh interpreter whose path holds neither benchmarks/ nor the tests' additions
    found = subprocess.run(
        [sys.executable, "-I", "-c", code, *stems], capture_output=True, text=True, check=True
    ).stdout.split()
    assert importlib.util.find_spec("_common") is not None  # the path does hold benchmarks/ here
    assert found == [], f"benchmark scripts named like installed modules: {found}"
