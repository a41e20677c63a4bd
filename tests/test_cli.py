"""The main job, ``python -m skvqgnn``: datasets, report, errors that name the argument."""

import json

import numpy as np
import pytest

from skvqgnn.__main__ import build_parser, main
from skvqgnn.layers import BACKBONES


def test_report_and_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["--dataset", "csbm", "--nodes", "600", "--batch-size", "150", "--n-codewords", "16"]
    assert main([*argv, "--epochs", "40", "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "csbm: 600 nodes" in printed and "VQ-GNN minus full graph" in printed
    report = json.loads(out.read_text())
    assert report["dataset"] == "csbm" and report["backbone"] == "gcn"
    vq, full = report["runs"]
    assert (vq["model"], vq["batch_size"]) == ("VQ-GNN", 150)
    assert (full["model"], full["batch_size"]) == ("full graph", None)
    for row in (vq, full):
        assert row["epochs"] == 40
        assert row["fit_time_s"] > 0 and row["predict_time_s"] > 0
        assert row["median_epoch_time_s"] > 0 and row["peak_memory_mib"] > 0
        # make_csbm's default classes are well separated: both models learn them
        assert row["test_accuracy"] > 0.6, row
    assert len(vq["vq_error"]) == 1 and 0 < vq["vq_error"][0] < 1
    assert full["vq_error"] == []


def test_full_batch_runs_once_and_is_labelled_full_graph(capsys):
    argv = ["--dataset", "csbm", "--nodes", "300", "--batch-size", "full", "--epochs", "2"]
    assert main([*argv, "--quiet"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.endswith("MiB")]
    assert len(rows) == 1 and rows[0].startswith("full graph")


def test_a_batch_holding_the_whole_graph_is_reported_as_full_graph(tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["--dataset", "csbm", "--nodes", "300", "--batch-size", "512", "--epochs", "2"]
    assert main([*argv, "--quiet", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "holds all 300 nodes" in printed and "VQ-GNN" not in printed
    (run,) = json.loads(out.read_text())["runs"]
    assert (run["model"], run["batch_size"]) == ("full graph", None)


def test_hidden_sizes_and_learning_rate_reach_the_model(tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["--dataset", "csbm", "--nodes", "300", "--batch-size", "100", "--n-codewords", "8"]
    argv += ["--hidden-sizes", "16,8", "--learning-rate", "0.01", "--epochs", "2"]
    assert main([*argv, "--quiet", "--no-reference", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert len(run["vq_error"]) == 2  # two hidden layers: two quantised layer inputs


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "(default: 512)" in text and "--hidden-sizes" in text and "--learning-rate" in text


def test_the_json_path_is_checked_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--json", str(tmp_path / "missing" / "report.json")])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "--json" in captured.err and "does not exist" in captured.err
    assert captured.out == ""  # nothing was loaded or trained


def test_bad_data_is_one_error_line(tmp_path, capsys):
    (tmp_path / "target.csv").write_text("id,target\n")
    assert main(["--dataset", "csv", "--root", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target.csv: no data row below the header" in err[0]
    assert "Traceback" not in err[0]


def test_csv_dataset_gets_a_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 2
    edges = [
        (i, j) for i in range(n) for j in range(i + 1, n) if y[i] == y[j] and rng.random() < 0.05
    ]
    (tmp_path / "edges.csv").write_text("id_1,id_2\n" + "".join(f"{i},{j}\n" for i, j in edges))
    (tmp_path / "features.csv").write_text(
        "node_id,feature_id,value\n" + "".join(f"{i},{y[i]},1\n" for i in range(n))
    )
    (tmp_path / "target.csv").write_text("id,target\n" + "".join(f"{i},{y[i]}\n" for i in range(n)))
    argv = ["--dataset", "csv", "--root", str(tmp_path), "--batch-size", "30", "--n-codewords", "8"]
    assert main([*argv, "--epochs", "30", "--quiet", "--no-reference"]) == 0
    printed = capsys.readouterr().out
    assert "csv: 120 nodes" in printed and "72 training labels" in printed  # 60/20/20 split
    assert "full graph" not in printed


def test_every_backbone_is_offered():
    parser = build_parser()
    for name in BACKBONES:
        assert parser.parse_args(["--backbone", name]).backbone == name


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--dataset", "citeseer"], "--root is needed for --dataset 'citeseer'"),
        (["--dataset", "csv", "--root", "/nonexistent/dir"], "--root '/nonexistent/dir' is not"),
        (["--dataset", "karate", "--root", "."], "--dataset 'karate' is not one of"),
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer or 'full'"),
        (["--batch-size", "big"], "argument --batch-size: must be a positive integer or 'full'"),
        (["--epochs", "-1"], "argument --epochs: must be a positive integer"),
        (["--backbone", "gcnn"], "argument --backbone: invalid choice"),
        (["--inference", "fast"], "argument --inference: invalid choice"),
        (["--device", "gpu"], "argument --device: device='gpu' is not a device PyTorch knows"),
        (["--hidden-sizes", "64,x"], "argument --hidden-sizes: must be comma-separated"),
        (["--learning-rate", "-1"], "argument --learning-rate: must be a positive number"),
    ],
)
def test_bad_arguments_name_the_argument(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err
