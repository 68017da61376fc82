"""Fine-tune the pretrained encoder vs a linear probe, on the same subject folds.

What it shows
-------------
1. ``megfm.evaluate.make_finetune_method`` turns fine-tuning into a method of the study
   runner: for each fold it trains on the training subjects' windows and scores the test
   subjects' windows. Two flavours: full fine-tuning (encoder + head, layer-wise learning
   rate decay) and a linear probe (frozen encoder, linear head).
2. ``megfm.evaluate.run_study`` evaluates them next to a logistic regression on frozen
   megfm embeddings, on *the same* subject-level folds, so the AUROCs are paired.
   Fine-tuning is too costly to refit on permuted labels, so its intervals and paired tests
   come from its fixed out-of-fold scores (bootstrap, swapped scores): narrower than the
   truth, read them as descriptive (docs/downstream.md, "Label permutations").
3. The study writes ``report.md``, ``report.json``, ``scores.csv`` and ``roc.png``; this
   script adds a bar chart of the AUROCs with their intervals.

With the quick sizes (6 subjects, a few steps) the numbers only prove the code runs.

Run
---
    python examples/05_finetune.py --quick --out /tmp/ex05

Writes ``finetune_study/`` (report and ``roc.png``) and ``finetune_auroc.png`` in
``--out`` (default: a new temporary folder), next to the shared cohort, store and model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick_data import default_out, get_quick_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny cohort and model (shared with examples 02-05), few steps")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out("05")

    import megfm
    from megfm.evaluate import make_finetune_method, run_study

    data = get_quick_data(out, quick=args.quick)
    store = data["store"]
    model = megfm.load_pretrained(data["model"])

    # Frozen embeddings, one row per window in store order (the study's metadata order).
    feats, meta = megfm.embed(model, store, pooling="mean", progress=False)

    # Fine-tuning methods: called once per fold with global window indices of the store.
    steps = 5 if args.quick else 200
    common = {"task": "migraine-vs-HC", "max_steps": steps,
              "batch_size": 8 if args.quick else 32, "seed": 0,
              "accelerator": "cpu" if args.quick else "auto"}
    extra = {
        "finetune": make_finetune_method(data["model"], store, layer_decay=0.75, **common),
        "linear_probe": make_finetune_method(data["model"], store, linear_probe=True,
                                             lr=1e-2, **common),
    }
    n_subjects = len(np.unique(meta["subject"]))  # half HC, half migraine
    study = run_study({"megfm": feats}, meta, task="migraine-vs-HC", classifiers=("logreg",),
                      n_splits=2 if args.quick else min(5, n_subjects // 2), extra_methods=extra,
                      reference="finetune", n_permutations=20 if args.quick else 200,
                      n_bootstrap=100 if args.quick else 1000, seed=0,
                      out=out / "finetune_study", progress=False)

    print(f"{study.task}: {len(study.subjects)} subjects, {len(study.folds)} folds shared by "
          "every method")
    print(f"{'method':<22}{'AUROC':>7}   95% interval (from)")
    names, values, lows, highs = [], [], [], []
    for name, m in study.metrics.items():
        auc = m["auroc"]
        print(f"{name:<22}{auc['value']:>7.3f}   [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}] "
              f"({auc['interval']})")
        names.append(name)
        values.append(auc["value"])
        lows.append(auc["value"] - auc["ci_low"])
        highs.append(auc["ci_high"] - auc["value"])
    for c in study.comparisons:
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}"
        print(f"  {c['reference']} vs {c['other']}: difference {c['difference']:+.3f}, p = {p}")

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(names, values, yerr=[lows, highs], capsize=4, color=["C0", "C1", "C2"][:len(names)])
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC (subjects)")
    ax.set_title("Migraine vs HC on the same folds")
    fig.tight_layout()
    fig.savefig(out / "finetune_auroc.png", dpi=100)
    plt.close(fig)
    print(f"report: {out / 'finetune_study' / 'report.md'}; figures: "
          f"{out / 'finetune_auroc.png'}, {out / 'finetune_study' / 'roc.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
