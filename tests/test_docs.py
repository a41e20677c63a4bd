"""The documentation runs and is current.

* Every ```python block of ``doc/howto/*.md`` and ``doc/concepts.md`` runs: a page's blocks are
  executed in order in one namespace, in a temporary directory. A block that cannot run here (it
  needs a GPU or a downloaded dataset) is marked by ``<!-- skip-test -->`` on the line before its
  fence; only a few may be. A block that imports PyTorch Geometric (not a dependency of the
  package) is left out when it is not installed, and the page's test then reports a skip.
* ``doc/api.md`` is what ``doc/build_api.py`` writes from the docstrings, and every public name
  is documented, with each parameter in its "Parameters" section.
* The links of the index, the how-to pages, the benchmark pages and the README point to files
  that exist.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "doc"
HOWTO = sorted((DOC / "howto").glob("*.md"))
PAGES = [*HOWTO, DOC / "concepts.md"]
BENCHMARKS = [DOC / "benchmarks.md", *sorted((DOC / "benchmarks").glob("*.md"))]
SKIP = "<!-- skip-test -->"
MAX_SKIPPED = 3  # blocks that need what a test machine lacks (a GPU, an OGB download)
OPTIONAL = ("torch_geometric",)  # packages a block may import that the package does not need


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """The ```python blocks of a Markdown page: (line of the first code line, code, skipped)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            skipped = i > 0 and lines[i - 1].strip() == SKIP
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"{page.name}:{i + 1}: unclosed code block"
            blocks.append((i + 2, "\n".join(lines[i + 1 : end]), skipped))
            i = end
        i += 1
    return blocks


def missing_packages(code: str) -> list[str]:
    """The packages of `OPTIONAL` that ``code`` imports and that are not installed."""
    return [
        name
        for name in OPTIONAL
        if re.search(rf"^\s*(from|import) {name}\b", code, re.M)
        and importlib.util.find_spec(name) is None
    ]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOC).as_posix() for p in PAGES])
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that save files write them here
    namespace = {"__name__": "__doc_page__"}
    left_out = []
    for line, code, skipped in python_blocks(page):
        if skipped:
            continue
        missing = missing_packages(code)
        if missing:
            left_out.append(f"line {line} needs {', '.join(missing)}")
            continue
        # leading newlines: a traceback names the page and the line the error is on
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    if left_out:
        pytest.skip(f"every other block ran; not installed: {'; '.join(left_out)}")


def test_few_blocks_are_skipped():
    blocks = [(page, block) for page in PAGES for block in python_blocks(page)]
    skipped = [f"{page.name}:{line}" for page, (line, _, skip) in blocks if skip]
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert len(blocks) - len(skipped) >= 15
    for page in HOWTO:
        assert any(not skip for _, _, skip in python_blocks(page)), f"{page.name}: nothing runs"


def test_skip_markers_precede_python_blocks():
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() == SKIP:
                following = lines[i + 1].strip() if i + 1 < len(lines) else ""
                assert following == "```python", f"{page.name}:{i + 1}: {SKIP} before no block"


def _build_api():
    spec = importlib.util.spec_from_file_location("build_api", DOC / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current():
    expected = _build_api().render()
    actual = (DOC / "api.md").read_text(encoding="utf-8")
    assert actual == expected, "doc/api.md is stale: run python doc/build_api.py --out doc/api.md"


def test_public_api_is_documented():
    assert _build_api().problems() == []


_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", DOC / "index.md", *HOWTO, *BENCHMARKS],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_relative_links_resolve(page):
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


def test_index_lists_every_page():
    index = (DOC / "index.md").read_text(encoding="utf-8")
    pages = [p for p in DOC.rglob("*.md") if p.name != "index.md"]
    for page in pages:
        assert f"({page.relative_to(DOC).as_posix()})" in index, f"index.md misses {page.name}"


_MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|Users|mnt)/[\w.-]+")


def test_docs_name_no_folder_of_a_machine():
    """Commands and records in the docs use paths relative to the repository."""
    pages = [ROOT / "README.md", *DOC.rglob("*.md"), *DOC.glob("*.json")]
    for page in pages:
        found = _MACHINE_PATH.findall(page.read_text(encoding="utf-8"))
        assert not found, f"{page.relative_to(ROOT)} names machine paths: {sorted(set(found))[:3]}"
