"""The main job (`megfm demo`) end to end at the smallest size: every stage and the report."""

import json

from megfm.cli.main import main


def test_demo_writes_report_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", str(out), "--n-subjects", "4", "--duration", "20", "--sim-sfreq", "200",
                 "--block-size", "5", "--max-steps", "3", "--batch-size", "8", "--n-splits", "2",
                 "--n-permutations", "20", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "migraine-vs-HC" in printed and "report:" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [row["stage"] for row in summary["timings"]] == [
        "simulate", "prepare", "pretrain", "embed", "evaluate", "explain"]
    assert set(summary["attention_alignment"]) == {"auditory", "somatosensory"}
    report = (out / "report.md").read_text()
    # every figure the report links exists
    for name in ["study/roc.png", "figures/attention_auditory.png",
                 "figures/attention_rest.png", "figures/attention_somatosensory.png"]:
        assert f"({name})" in report
        assert (out / name).stat().st_size > 0
    study = json.loads((out / "study" / "report.json").read_text())
    assert {"megfm/logreg", "raw/logreg", "spectral/logreg"} <= set(study["methods"])
