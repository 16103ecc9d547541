"""Evaluation across sets (one table, a row a set) and on exactly the videos a training run held out."""

from __future__ import annotations

import json

from data_prep.files import csv_text, read_csv_dicts
from deepfake.cli import evaluate
from tests.test_predict import make_weights


def test_several_sets_give_one_table(synth_dataset, extracted_dataset, tmp_path, capsys):
    weights = make_weights(tmp_path / "detector.pt")
    out = tmp_path / "cross"
    missing = tmp_path / "nowhere"
    assert evaluate.main([str(synth_dataset), str(extracted_dataset / "index.csv"), str(missing), "--weights",
                          str(weights), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = read_csv_dicts(out / "cross.csv")
    assert [r["set"] for r in rows] == [synth_dataset.name, extracted_dataset.name, "nowhere"]
    assert rows[0]["n"] == "6" and 0 <= float(rows[0]["auc"]) <= 1 and rows[2]["error"]
    assert (out / synth_dataset.name / "metrics.json").is_file() and "| set | n | auc |" in printed
    assert "| set | n | auc |" in (out / "cross.md").read_text()


def test_a_runs_split_file_picks_the_videos_it_held_out(extracted_dataset, tmp_path):
    videos = sorted({r["video"] for r in read_csv_dicts(extracted_dataset / "index.csv")})
    held_out = videos[::2]
    split = tmp_path / "split.csv"
    split.write_text(csv_text([[v, "val" if v in held_out else "train", v] for v in videos],
                              ["video", "split", "group"]))
    weights = make_weights(tmp_path / "detector.pt")
    assert evaluate.main([str(extracted_dataset / "index.csv"), "--split", "val", "--split-file", str(split),
                          "--weights", str(weights), "--out", str(tmp_path / "eval"), "--device", "cpu",
                          "--no-progress"]) == 0
    scored = [r["video"] for r in read_csv_dicts(tmp_path / "eval" / "predictions.csv")]
    assert sorted(scored) == held_out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_videos"] == len(held_out)
