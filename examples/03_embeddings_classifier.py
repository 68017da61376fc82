"""Embeddings from a pretrained megfm model and your own scikit-learn classifier.

What it shows
-------------
1. ``megfm.embed(model, store, pooling="state_concat")`` gives one row per subject: the
   mean window embedding of each state (rest, auditory, somatosensory), concatenated.
2. A custom scikit-learn classifier (standardise -> shrinkage LDA) is cross-validated on
   those subject-level rows with stratified folds, so no subject is in a training and a
   test fold at once. The out-of-fold scores give an AUROC.
3. Window-level features (``pooling="mean"``) with ``StratifiedGroupKFold`` grouped by
   subject: the windows of a subject never straddle train and test; a subject's score is
   the mean of its windows' scores.
4. ``megfm.Embedder`` is a scikit-learn transformer, so the model sits inside a
   ``Pipeline`` (``Embedder -> StandardScaler -> LogisticRegression``) and is used by
   ``cross_val_score`` like any other step, on raw window arrays.

With the quick sizes (6 subjects, 15 pretraining steps) the scores are noise; run without
``--quick`` for a cohort where the planted migraine effects can be found.

Run
---
    python examples/03_embeddings_classifier.py --quick --out /tmp/ex03

Writes ``subject_embeddings.png`` and ``cv_scores.png`` in ``--out`` (default: a new
temporary folder), next to the shared cohort, store and model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick_data import get_quick_data, parse_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args, out = parse_args(__doc__, "03", argv)

    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import (
        StratifiedGroupKFold,
        StratifiedKFold,
        cross_val_predict,
        cross_val_score,
    )
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import megfm

    data = get_quick_data(out, quick=args.quick)
    model = megfm.load_pretrained(data["model"])

    # --- 1. subject-level embeddings ----------------------------------------------------------
    feats, meta = megfm.embed(model, data["store"], pooling="state_concat", progress=False)
    y = (meta["label"] == "migraine").astype(int)
    print(f"subject-level features: {feats.shape} "
          f"({int(y.sum())} migraine, {int((1 - y).sum())} HC)")

    # --- 2. a custom classifier, stratified folds over subjects ----------------------------------
    n_splits = int(min(np.bincount(y).min(), 5))
    clf = make_pipeline(StandardScaler(),
                        LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=0)
    proba = cross_val_predict(clf, feats, y, cv=cv, method="predict_proba")[:, 1]
    auc_subject = roc_auc_score(y, proba)
    print(f"shrinkage LDA on subject embeddings, {n_splits}-fold: AUROC = {auc_subject:.2f}")

    # --- 3. window-level features, folds grouped by subject ---------------------------------------
    wfeats, wmeta = megfm.embed(model, data["store"], pooling="mean", progress=False)
    wy = (wmeta["label"] == "migraine").astype(int)
    groups = wmeta["subject"]
    gcv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=0)
    wclf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    wproba = cross_val_predict(wclf, wfeats, wy, groups=groups, cv=gcv,
                               method="predict_proba")[:, 1]
    subjects = np.unique(groups)
    subj_score = np.array([wproba[groups == s].mean() for s in subjects])
    subj_y = np.array([wy[groups == s][0] for s in subjects])
    auc_window = roc_auc_score(subj_y, subj_score)
    print(f"logistic regression on {len(wy)} window embeddings, grouped by subject: "
          f"subject AUROC = {auc_window:.2f}")

    # --- 4. the Embedder inside a scikit-learn Pipeline ------------------------------------------
    # Raw windows (n_windows, n_sensors, n_times) in fT; the Embedder needs their geometry.
    windows = megfm.read_store(data["store"])
    rest = np.flatnonzero(windows.metadata["state"] == "rest")
    X = windows.data[rest]
    ry = (windows.metadata["label"][rest] == "migraine").astype(int)
    rgroups = windows.metadata["subject"][rest]
    geometry = windows.geometries[int(windows.metadata["recording"][rest[0]])]
    pipe = make_pipeline(megfm.Embedder(data["model"], geometry=geometry, sfreq=windows.sfreq),
                         StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    acc = cross_val_score(pipe, X, ry, groups=rgroups, cv=gcv, scoring="accuracy")
    print(f"Pipeline(Embedder, StandardScaler, LogisticRegression) on {len(ry)} rest windows: "
          f"accuracy per fold {np.round(acc, 2).tolist()}")

    # --- figures ------------------------------------------------------------------------------------
    pcs = PCA(n_components=2, random_state=0).fit_transform(StandardScaler().fit_transform(feats))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for code, name, colour in ((0, "HC", "C0"), (1, "migraine", "C3")):
        ax.scatter(*pcs[y == code].T, c=colour, label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Subject embeddings (state_concat)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "subject_embeddings.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3))
    names = ["LDA, subjects", "logreg, windows", "Pipeline, rest"]
    values = [auc_subject, auc_window, float(np.mean(acc))]
    ax.bar(names, values, color=["C0", "C1", "C2"])
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC / accuracy")
    ax.set_title("Migraine vs HC, subject-grouped CV")
    fig.tight_layout()
    fig.savefig(out / "cv_scores.png", dpi=100)
    plt.close(fig)
    print(f"figures: {out / 'subject_embeddings.png'}, {out / 'cv_scores.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
