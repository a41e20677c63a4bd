"""The generated regions of the link-prediction and node-classification pages, rebuilt from saved
records (no fits): tables, bars, and the hand-written rest of each page left alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import link_prediction  # noqa: E402
import node_classification  # noqa: E402
from _common import GENERATED_END, GENERATED_START, generated_region  # noqa: E402

# a page as the scripts find it: hand-written text around a stale generated region
PROSE = "# Title\n\nWhat is measured, by hand.\n\n## Results\n\n"
NOTES = "\n\n## Notes\n\nBy hand too.\n"
PAGE = f"{PROSE}{GENERATED_START}\nstale\n{GENERATED_END}{NOTES}"

META = {
    "command": "python benchmarks/x.py",
    "date": "2026-01-01 00:00 UTC",
    "cpu_count": 2,
    "cpu_model": "cpu",
    "memory_gib": 8.0,
    "python": "3.11",
    "platform": "linux",
    "skvqgnn": "0.1.0",
    "git": "abc",
    "datasets": ["cora"],
    "backbones": ["gcn", "sage"],
    "seeds": [0],
    "max_epochs": None,
}


def _record(backbone: str, mode: str, **metrics: float) -> dict:
    return {
        "dataset": "cora",
        "backbone": backbone,
        "mode": mode,
        "seed": 0,
        "n_nodes": 2708,
        "n_edges": 5278,
        "n_train_edges": 4486,
        "batch_size": None if mode == "full" else 338,
        "max_epochs": 200,
        "epochs": 200,
        "fit_time_s": 10.0,
        "epoch_time_s": 0.05,
        "rss_increase_mib": 100.0,
        "rss_peak_mib": 400.0,
        "gpu_peak_mib": None,
        "device": "cpu",
        "torch": "2.0",
        "torch_threads": 2,
        **metrics,
    }


def _save(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps({"meta": META, "runs": records}))
    return path


def _cells(page: str, prefix: str) -> list[str]:
    """The cells of the table row that starts with ``prefix``."""
    row = next(line for line in page.splitlines() if line.startswith(prefix))
    return [cell.strip() for cell in row.strip("|").split("|")]


def _written(page: str) -> str:
    """The generated region of a page the scripts wrote, after checking that the hand-written
    text around it is the one of `PAGE`."""
    assert page.startswith(PROSE + GENERATED_START + "\n")
    assert page.endswith(GENERATED_END + NOTES)
    assert "stale" not in page
    return generated_region(page)


def test_link_prediction_region_tables_and_bars(tmp_path):
    saved = _save(
        tmp_path / "lp.json",
        [
            _record("gcn", "vq", test_roc_auc=0.90, test_hits50=0.50, val_roc_auc=0.9),
            _record("gcn", "full", test_roc_auc=0.905, test_hits50=0.52, val_roc_auc=0.9),
            _record("sage", "vq", test_roc_auc=0.80, test_hits50=0.40, val_roc_auc=0.8),
        ],
    )
    out = tmp_path / "page.md"
    out.write_text(PAGE)
    link_prediction.main(["--from-json", str(saved), "--out", str(out)])
    page = _written(out.read_text())
    assert page.startswith("Produced on 2026-01-01 00:00 UTC by\n")
    assert "### cora (2708 nodes, 5278 edges, 4486 for training)" in page
    # test ROC AUC, test Hits@50, val ROC AUC, Δ ROC AUC, Δ Hits@50
    assert _cells(page, "| gcn | VQ")[3:8] == [
        "0.900 ± 0.000",
        "0.500 ± 0.000",
        "0.900 ± 0.000",
        "-0.5",
        "-2.0",
    ]
    assert _cells(page, "| gcn | full")[6:8] == ["(reference)", "(reference)"]
    assert _cells(page, "| sage | VQ")[6:8] == ["n/a", "n/a"]
    # VQ row, measured, threshold, result
    assert _cells(page, "| cora / gcn: VQ (n/8) ≥ full − 1 point, ROC AUC")[1:] == [
        "VQ, batch n/8",
        "0.900",
        "0.905 − 0.010 = 0.895",
        "**PASS**",
    ]
    assert _cells(page, "| cora / gcn: VQ (n/8) ≥ full − 1 point, Hits@50")[1:] == [
        "VQ, batch n/8",
        "0.500",
        "0.520 − 0.010 = 0.510",
        "**FAIL**",
    ]
    assert _cells(page, "| cora / sage: VQ (n/8) ≥ full − 1 point, ROC AUC")[4] == "NOT RUN"
    assert _cells(page, "| twitch-en / gcn: VQ (n/8) ≥ full − 1 point, Hits@50")[1:] == [
        "none",
        "–",
        "–",
        "NOT RUN",
    ]

    # a second run rewrites the same region in place
    written = out.read_text()
    link_prediction.main(["--from-json", str(saved), "--out", str(out)])
    assert out.read_text() == written


def test_bars_take_the_vq_mode_of_best_validation_auc(tmp_path):
    """A VQ row enters the bars only when its validation ROC AUC is the highest of the three
    competing VQ modes, whatever its test metrics."""
    full = _record("gcn", "full", test_roc_auc=0.90, test_hits50=0.50, val_roc_auc=0.9)
    plain = _record("gcn", "vq", test_roc_auc=0.85, test_hits50=0.40, val_roc_auc=0.86)
    for val, val_accumulate, chosen, result in (
        (0.87, 0.80, "VQ, batch n/8, partners", "**PASS**"),
        (0.85, 0.80, "VQ, batch n/8", "**FAIL**"),
        (0.86, 0.80, "VQ, batch n/8", "**FAIL**"),  # a tie keeps the default
        (0.87, 0.88, "VQ, batch n/8, one step an epoch", "**FAIL**"),
    ):
        partners = _record(
            "gcn", "vq-partners", test_roc_auc=0.95, test_hits50=0.6, val_roc_auc=val
        )
        accumulate = _record(
            "gcn", "vq-accumulate", test_roc_auc=0.70, test_hits50=0.3, val_roc_auc=val_accumulate
        )
        # the fourth VQ mode is shown but never competes, even with the best validation
        both = _record(
            "gcn", "vq-partners-accumulate", test_roc_auc=0.99, test_hits50=0.9, val_roc_auc=0.99
        )
        saved = _save(tmp_path / "lp.json", [plain, partners, accumulate, both, full])
        out = tmp_path / "page.md"
        out.write_text("# Page\n")
        link_prediction.main(["--from-json", str(saved), "--out", str(out)])
        page = out.read_text()
        cells = _cells(page, "| cora / gcn: VQ (n/8) ≥ full − 1 point, ROC AUC")
        assert cells[1] == chosen and cells[4] == result
        assert _cells(page, "| gcn | VQ, batch n/8, partners |")[3] == "0.950 ± 0.000"
        assert _cells(page, "| gcn | VQ, batch n/8, one step an epoch |")[3] == "0.700 ± 0.000"
        row = _cells(page, "| gcn | VQ, batch n/8, partners, one step an epoch |")
        assert row[3] == "0.990 ± 0.000"


def test_node_classification_region_tables_and_bars(tmp_path):
    saved = _save(
        tmp_path / "nc.json",
        [
            _record("gcn", "vq", test_acc=0.8, val_acc=0.78),
            _record("gcn", "full", test_acc=0.81, val_acc=0.79),
            _record("sage", "full", test_acc=0.81, val_acc=0.79),
        ],
    )
    out = tmp_path / "page.md"
    out.write_text(PAGE)
    node_classification.main(["--from-json", str(saved), "--out", str(out)])
    page = _written(out.read_text())
    assert page.startswith("Produced on 2026-01-01 00:00 UTC by\n")
    assert "### cora (2708 nodes)" in page
    # test acc, val acc, Δ
    assert _cells(page, "| gcn | VQ, batch n/8")[3:6] == ["0.800 ± 0.000", "0.780 ± 0.000", "-1.0"]
    assert _cells(page, "| gcn | full graph")[5] == "(reference)"
    assert (
        "| cora / gcn: VQ (n/8) ≥ full − 1 point | 0.800 | 0.810 − 0.010 = 0.800 | **PASS** |"
        in (page)
    )
    assert "| cora / sage: VQ (n/8) ≥ full − 1 point | – | – | NOT RUN |" in page
    assert "| cora / gcn: VQ, batch 512 ≥ 0.80 | – | – | NOT RUN |" in page
