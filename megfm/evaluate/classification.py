"""The downstream study: subject-level classification of groups from window features.

:func:`run_study` answers the question users ask of a foundation model: do its features
tell patients from controls better than what I had (raw signals, spectral features), and
is the difference real? Every feature set and classifier is evaluated on the same
subject-level folds. The uncertainty comes from refitting every classifier on permuted
subject labels, on folds drawn the same way: this gives each method's p-value against chance,
the paired tests of the reference against the other methods, and the intervals (the metric
+- z x its standard deviation over the refits). Resampling fixed out-of-fold scores (the
bootstrap, or swapping two methods' scores) leaves out how the classifiers change with
their training subjects: on synthetic data its 95 % intervals missed 0.5 without an effect in
14 % of cohorts, and its paired test called equally good methods different in 13-16 %
(label permutations: 6 % and 4-5 %; ``benchmarks/bench_study_calibration.py``), so it serves
only the extra methods, which are not refitted.

Class coding: for a task ``"<G>-vs-<B>"`` class 0 is ``B`` (the controls) and class 1 is
``G``; scores are probabilities of ``G``. For ``"multiclass"`` the classes are the groups
present, sorted, and scores are one probability per class in that order.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from scipy.special import expit, softmax
from scipy.stats import norm
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .._grouping import group_codes, group_means
from .._version import __version__
from .splits import Fold, check_no_leak, subject_folds, subject_labels, window_indices
from .stats import METRICS, bootstrap_metrics, compute_metrics, paired_permutation_test

logger = logging.getLogger(__name__)

__all__ = ["StudyResult", "make_classifier", "parse_task", "run_study",
           "subject_state_matrix"]

#: Names accepted in ``classifiers``.
CLASSIFIERS: tuple[str, ...] = ("logreg", "svm", "rf")
_LEVELS = ("subject", "window")


def make_classifier(name: str, *, seed: int = 0) -> BaseEstimator:
    """One of the built-in classifiers, seeded.

    Parameters
    ----------
    name : ``"logreg"`` | ``"svm"`` | ``"rf"``
        Standardised L2 logistic regression, standardised linear SVM, or a random forest
        of 200 trees.
    seed : int
        Random state of the estimator.

    Returns
    -------
    estimator : sklearn estimator
    """
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    if name == "svm":
        return make_pipeline(StandardScaler(),
                             LinearSVC(C=0.1, max_iter=20000, random_state=seed))
    if name == "rf":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    raise ValueError(f"Invalid classifier {name!r}: expected one of {CLASSIFIERS} or a "
                     "scikit-learn estimator.")


def parse_task(task: str, labels) -> list[str]:
    """The classes of a task, checked against the labels present.

    Parameters
    ----------
    task : str
        ``"<G>-vs-<B>"`` (e.g. ``"migraine-vs-HC"``, ``"PPTH-vs-HC"``) or ``"multiclass"``.
    labels : array of str
        Labels of the windows (or subjects); ``""`` means unknown and is ignored.

    Returns
    -------
    classes : list of str
        ``[B, G]`` for a two-group task, the sorted groups for ``"multiclass"``.
    """
    present = sorted(set(np.asarray(labels).astype(str).tolist()) - {""})
    if task == "multiclass":
        if len(present) < 2:
            raise ValueError(f"task='multiclass' needs at least two groups; the labels hold "
                             f"{present}.")
        return present
    parts = task.split("-vs-") if isinstance(task, str) else []
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(f"Invalid value for 'task': expected '<group>-vs-<group>' (e.g. "
                         f"'migraine-vs-HC') or 'multiclass'; got {task!r}.")
    absent = [p for p in parts if p not in present]
    if absent:
        raise ValueError(f"Task {task!r} names group(s) {absent} absent from the labels; "
                         f"groups present: {present}.")
    return [parts[1], parts[0]]


def subject_state_matrix(features, subjects, states=None, *, subject_order=None,
                         state_order=None) -> np.ndarray:
    """Subject-level design matrix: mean of each subject's windows, per state, states concatenated.

    Parameters
    ----------
    features : array, shape (n_windows, n_features)
        Window features.
    subjects : array of str, shape (n_windows,)
        Subject of each window.
    states : array of str, shape (n_windows,) | None
        State of each window; None treats all windows as one state.
    subject_order, state_order : sequence of str | None
        Row and block order (default: sorted unique values). Windows of other subjects or
        states are left out.

    Returns
    -------
    X : array, shape (n_subjects, n_states * n_features)
        Block ``j`` holds the mean over the subject's windows in state ``j``, skipping
        non-finite values; NaN where a subject has no (finite) value in that state.

    See Also
    --------
    megfm.embedding.aggregate_by_subject : the same means in long format (one row per
        subject and state) with the subjects' labels and window counts.
    """
    features = np.asarray(features, dtype=np.float64)
    subjects = np.asarray(subjects).astype(str)
    states = np.zeros(len(subjects), str) if states is None else np.asarray(states).astype(str)
    subject_order = np.unique(subjects) if subject_order is None else np.asarray(subject_order)
    state_order = np.unique(states) if state_order is None else np.asarray(state_order)
    rows = group_codes(subjects, subject_order)
    blocks = group_codes(states, state_order)
    n_sub, n_st, d = len(subject_order), len(state_order), features.shape[1]
    cell = np.where((rows >= 0) & (blocks >= 0), rows * n_st + blocks, -1)
    means, _ = group_means(features, cell, n_sub * n_st, skipna=True)
    return means.reshape(n_sub, n_st * d)


def _impute(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN with the training column means (0 for all-NaN columns)."""
    if not (np.isnan(train).any() or np.isnan(test).any()):
        return train, test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        means = np.nanmean(train, axis=0)
    means = np.where(np.isfinite(means), means, 0.0)
    return np.where(np.isnan(train), means, train), np.where(np.isnan(test), means, test)


def _seed_estimator(est: BaseEstimator, seed: int) -> BaseEstimator:
    est = clone(est)
    params = {k: seed for k, v in est.get_params().items()
              if k.endswith("random_state") and v is None}
    return est.set_params(**params) if params else est


def _scores(est, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Probability-like scores: (n,) for two classes, (n, K) otherwise."""
    if hasattr(est, "predict_proba"):
        proba = np.zeros((len(X), n_classes))
        proba[:, np.asarray(est.classes_, dtype=np.int64)] = est.predict_proba(X)
    elif hasattr(est, "decision_function"):
        dec = np.asarray(est.decision_function(X), dtype=np.float64)
        if n_classes == 2:
            return expit(dec)  # margin 0 -> 0.5, order kept
        proba = np.zeros((len(X), n_classes))
        proba[:, np.asarray(est.classes_, dtype=np.int64)] = softmax(dec, axis=1)
    else:
        proba = np.eye(n_classes)[np.asarray(est.predict(X), dtype=np.int64)]
    return proba[:, 1] if n_classes == 2 else proba


def _resolve_classifiers(classifiers, seed: int) -> dict[str, BaseEstimator]:
    if isinstance(classifiers, (str, BaseEstimator)):
        classifiers = (classifiers,)
    if isinstance(classifiers, Mapping):
        items = list(classifiers.items())
    else:
        items = []
        for c in classifiers:
            name = c if isinstance(c, str) else (
                c.steps[-1][1].__class__.__name__ if isinstance(c, Pipeline) else c.__class__.__name__)
            items.append((name, c))
    out: dict[str, BaseEstimator] = {}
    for name, c in items:
        est = make_classifier(c, seed=seed) if isinstance(c, str) else c
        if not (hasattr(est, "fit") and (hasattr(est, "predict") or hasattr(est, "predict_proba"))):
            raise TypeError(f"Classifier {name!r} is a {type(est).__name__}, not a scikit-learn "
                            f"classifier; pass one of {CLASSIFIERS} or an estimator with fit/predict.")
        base, k = name, 2
        while name in out:
            name, k = f"{base}{k}", k + 1
        out[name] = _seed_estimator(est, seed)
    if not out:
        raise ValueError("No classifier given; pass e.g. classifiers=('logreg', 'svm', 'rf').")
    return out


@dataclass
class StudyResult:
    """Outcome of :func:`run_study`.

    Attributes
    ----------
    task : str
        The task, e.g. ``"migraine-vs-HC"``.
    classes : list of str
        Class names in code order (``[controls, patients]`` for two-group tasks).
    level : str
        ``"subject"`` or ``"window"``.
    subjects : array of str, shape (n_subjects,)
        Subjects of the task, sorted.
    y : array of int, shape (n_subjects,)
        True class codes.
    tested : array of bool, shape (n_subjects,)
        Subjects with at least one out-of-fold score (all, unless ``balanced_test``).
    scores : dict of str to array
        Out-of-fold scores per method, averaged over repetitions, shape (n_subjects,) or
        (n_subjects, n_classes); NaN for untested subjects.
    metrics : dict
        ``{method: {metric: {"value", "ci_low", "ci_high", "interval"}}}`` over tested
        subjects; ``"interval"`` says where the interval comes from: ``"permutation"``
        (refits on permuted labels) or ``"bootstrap"`` (fixed out-of-fold scores: extra
        methods, or ``n_permutations=0``).
    comparisons : list of dict
        ``{"reference", "other", "auroc_reference", "auroc_other", "difference",
        "p_value", "test"}`` per comparison; ``"test"`` is ``"label permutations"``
        (both methods refitted) or ``"swapped fixed scores"`` (an extra method is
        involved).
    folds : list of Fold
        The subject-level folds used by every method.
    config : dict
        The study parameters.
    chance : dict of str to float
        Per classifier method, the p-value of its AUROC against chance from refitting with
        permuted subject labels (empty when ``n_permutations=0``).
    null : dict
        ``{method: {metric: array (n_permutations,)}}``: each classifier method's metrics
        refitted on permuted labels (empty when ``n_permutations=0``).
    paths : dict of str to Path
        Files written (when ``out`` was given).
    """

    task: str
    classes: list[str]
    level: str
    subjects: np.ndarray
    y: np.ndarray
    tested: np.ndarray
    scores: dict[str, np.ndarray]
    metrics: dict[str, dict[str, dict[str, float]]]
    comparisons: list[dict]
    folds: list[Fold]
    config: dict
    chance: dict[str, float] = field(default_factory=dict)
    null: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """Method names, in evaluation order."""
        return list(self.metrics)

    def summary(self) -> dict:
        """The JSON-ready report (what ``report.json`` holds)."""
        counts = {c: int(np.sum(self.y == i)) for i, c in enumerate(self.classes)}
        return {
            "megfm_version": __version__,
            "task": self.task,
            "classes": list(self.classes),
            "positive": self.classes[1] if len(self.classes) == 2 else None,
            "level": self.level,
            "n_subjects": int(len(self.subjects)),
            "n_tested": int(self.tested.sum()),
            "subjects_per_class": counts,
            "config": self.config,
            "methods": self.metrics,
            "comparisons": self.comparisons,
            "chance": self.chance,
        }

    def to_markdown(self) -> str:
        """The report as a Markdown page with a metrics table and a comparisons table."""
        cfg = self.config
        counts = ", ".join(f"{v} {k}" for k, v in self.summary()["subjects_per_class"].items())
        lines = [
            f"# {self.task}: subject-level classification", "",
            f"{len(self.subjects)} subjects ({counts}); {self.level}-level classifiers; "
            f"{cfg['n_splits']} folds x {cfg['n_repeats']} repeat(s) over subjects"
            f"{' (balanced test sets)' if cfg['balanced_test'] else ''}; seed {cfg['seed']}. "
            f"{cfg['ci']:.0%} intervals: " + (
                f"the value +- z x its standard deviation over {cfg['n_permutations']} refits "
                "on permuted labels" + (" (every distinct relabeling of the subjects: an exact "
                                        "test)" if cfg.get("exact_permutation_test") else "")
                if cfg["n_permutations"] else "bootstrap over subjects")
            + (" (extra methods: bootstrap over subjects of their fixed scores, narrower "
               "than the refits' spread)" if cfg["n_permutations"] and cfg["extra_methods"]
               else "") + ".", "",
            "| method | AUROC | balanced accuracy | sensitivity | specificity |",
            "|---|---|---|---|---|",
        ]
        if self.chance:
            lines[-2] = lines[-2] + " p vs chance |"
            lines[-1] = lines[-1] + "---|"
        for name, m in self.metrics.items():
            cells = [f"{m[k]['value']:.3f} [{m[k]['ci_low']:.3f}, {m[k]['ci_high']:.3f}]"
                     for k in METRICS]
            if self.chance:
                p = self.chance.get(name)
                cells.append("n/a" if p is None else f"{p:.4f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if self.comparisons:
            lines += ["", f"Paired tests of the AUROC difference ({cfg['n_permutations']} "
                      "permutations, two-sided):", "",
                      "| reference | other | AUROC difference | p-value | test |",
                      "|---|---|---|---|---|"]
            for c in self.comparisons:
                p = "n/a" if c["p_value"] is None else f"{c['p_value']:.4f}"
                lines.append(f"| {c['reference']} | {c['other']} | {c['difference']:+.3f} | {p} "
                             f"| {c.get('test') or 'n/a'} |")
        if len(self.classes) == 2:
            lines += ["", f"Positive class: {self.classes[1]}; negative: {self.classes[0]}."]
        lines += ["", "![ROC curves](roc.png)", ""]
        return "\n".join(lines)

    def plot_roc(self, ax=None):
        """ROC curve of every method (micro-average one-vs-rest for more than two classes).

        Parameters
        ----------
        ax : matplotlib.axes.Axes | None
            Axes to draw on; a new figure when None.

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        from matplotlib.figure import Figure
        from sklearn.metrics import roc_curve

        if ax is None:
            fig = Figure(figsize=(5.5, 5))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        y = self.y[self.tested]
        for name, score in self.scores.items():
            s = score[self.tested]
            if s.ndim == 1:
                fpr, tpr, _ = roc_curve(y, s)
            else:
                fpr, tpr, _ = roc_curve(np.eye(len(self.classes))[y].ravel(), s.ravel())
            ax.plot(fpr, tpr, label=f"{name} ({self.metrics[name]['auroc']['value']:.2f})")
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
        ax.set(xlabel="false positive rate (1 - specificity)",
               ylabel="true positive rate (sensitivity)", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{self.task} ({self.level} level)")
        ax.legend(loc="lower right", fontsize="small", title="method (AUROC)")
        return fig

    def save(self, out) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, ``roc.png`` and ``scores.csv`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / k for k in ("report.json", "report.md", "roc.png", "scores.csv")}

        def _write_text(path: Path, text: str) -> None:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)

        _write_text(paths["report.json"], json.dumps(self.summary(), indent=2))
        _write_text(paths["report.md"], self.to_markdown())
        fig = self.plot_roc()
        tmp = paths["roc.png"].with_name("roc.tmp.png")
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        tmp.replace(paths["roc.png"])
        header = ["subject", "label", "tested"]
        cols = []
        for name, s in self.scores.items():
            if s.ndim == 1:
                header.append(name)
                cols.append(s[:, None])
            else:
                header += [f"{name}:{c}" for c in self.classes]
                cols.append(s)
        mat = np.concatenate(cols, axis=1) if cols else np.zeros((len(self.y), 0))
        rows = [",".join(header)]
        for i, subj in enumerate(self.subjects):
            vals = ["" if not np.isfinite(v) else f"{v:.6g}" for v in mat[i]]
            rows.append(",".join([str(subj), self.classes[self.y[i]], str(bool(self.tested[i]))]
                                 + vals))
        _write_text(paths["scores.csv"], "\n".join(rows) + "\n")
        self.paths = paths
        return paths


def _check_inputs(features, metadata) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if isinstance(features, np.ndarray):
        features = {"megfm": features}
    if not isinstance(features, Mapping) or not features:
        raise TypeError("features must be a non-empty dict of name -> array (n_windows, n_features).")
    if not isinstance(metadata, Mapping) or "subject" not in metadata or "label" not in metadata:
        raise ValueError("metadata must be a dict of columns with at least 'subject' and 'label' "
                         "(one value per window), e.g. Windows.metadata.")
    meta = {k: np.asarray(v) for k, v in metadata.items()}
    n = len(meta["subject"])
    for k in ("label", "state"):
        if k in meta and len(meta[k]) != n:
            raise ValueError(f"metadata['{k}'] has {len(meta[k])} values but metadata['subject'] "
                             f"has {n}.")
    out = {}
    for name, x in features.items():
        if "/" in str(name):
            raise ValueError(f"Feature set name {name!r} must not contain '/'.")
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):  # float32 stays: raw features are big
            x = x.astype(np.float64)
        if x.ndim != 2:
            raise ValueError(f"features[{name!r}] must have shape (n_windows, n_features); got "
                             f"{x.shape}.")
        if x.shape[0] != n:
            raise ValueError(f"features[{name!r}] has {x.shape[0]} rows but metadata has {n} "
                             "windows; features and metadata must describe the same windows in "
                             "the same order.")
        if np.isinf(x).any():
            raise ValueError(f"features[{name!r}] contains infinite values.")
        out[str(name)] = x
    return out, meta


def _comparison_pairs(reference, feature_names, classifier_names, extra_names,
                      methods) -> list[tuple[str, str]]:
    """The (reference, other) method pairs of the paired tests, in order, without repeats."""
    if reference is None:
        return []
    items = [reference] if isinstance(reference, (str, tuple)) else list(reference)
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2 or not all(m in methods for m in item) or item[0] == item[1]:
                raise ValueError(f"Invalid pair in 'reference': {item!r}; a pair names two "
                                 f"different methods of {list(methods)}.")
            new = [tuple(item)]
        elif item in feature_names:
            new = []
            for c in classifier_names:
                ref = f"{item}/{c}"
                new += [(ref, f"{f}/{c}") for f in feature_names if f != item]
                new += [(ref, e) for e in extra_names]
        elif item in methods:
            new = [(item, m) for m in methods if m != item]
        else:
            raise ValueError(f"Invalid value for 'reference': {item!r} is neither a feature "
                             f"set {list(feature_names)} nor a method {list(methods)}; pass "
                             "one of them, a (reference, other) pair of methods, a list of "
                             "these, or None (no comparison).")
        pairs += [p for p in new if p not in pairs]
    return pairs


def run_study(features, metadata, *, task: str = "migraine-vs-HC",
              classifiers: Sequence | Mapping = CLASSIFIERS, level: str = "subject",
              n_splits: int = 5, n_repeats: int = 1, balanced_test: bool = False,
              extra_methods: Mapping[str, Callable] | None = None,
              reference: str | tuple[str, str] | Sequence[str | tuple[str, str]] | None = "megfm",
              preprocessors: Mapping[str, BaseEstimator] | None = None,
              n_permutations: int = 200, n_bootstrap: int = 1000, ci: float = 0.95,
              seed: int = 0, out=None, progress: bool = True,
              blas_threads: int | None = 1, n_jobs: int | None = None) -> StudyResult:
    """Classify groups from window features with subject-level cross-validation.

    Parameters
    ----------
    features : dict of str to array, shape (n_windows, n_features)
        Feature sets to compare, e.g. ``{"megfm": embeddings, "raw": raw, "spectral": spec}``,
        all over the same windows in the order of ``metadata``. NaN values are allowed
        (they are filled with the training subjects' means inside each fold).
    metadata : dict of str to array, shape (n_windows,)
        Window metadata with at least ``subject`` and ``label`` (and ``state`` for
        per-state aggregation), e.g. ``Windows.metadata`` or what ``embed`` returns.
    task : str
        ``"<G>-vs-<B>"`` (``"migraine-vs-HC"``, ``"PPTH-vs-HC"``, ...) or ``"multiclass"``.
        Windows of other groups, and of unknown label ``""``, are left out.
    classifiers : sequence of str or estimators | dict of str to estimator
        Built-ins ``"logreg"``, ``"svm"``, ``"rf"`` (see :func:`make_classifier`) or any
        scikit-learn classifiers (cloned for each fold; an unset ``random_state`` is set
        to ``seed``).
    level : ``"subject"`` | ``"window"``
        ``"subject"``: each subject's windows are averaged per state and the states
        concatenated, one row per subject. ``"window"``: classifiers are trained on windows
        and a subject's score is the mean of its windows' scores.
    n_splits, n_repeats : int
        Subject-level stratified folds and their repetitions (see
        :func:`~megfm.evaluate.splits.subject_folds`).
    balanced_test : bool
        Equal numbers of subjects of each class in every test fold.
    extra_methods : dict of str to callable | None
        Further methods evaluated on the same folds, such as fine-tuning
        (:func:`~megfm.evaluate.make_finetune_method`): ``method(train_idx, test_idx)``
        receives indices into ``metadata`` (the store's window index) of the training and
        test windows and returns one score per test window: the probability of the
        positive class (shape ``(n_test,)``) or of each class in :attr:`StudyResult.classes`
        order (shape ``(n_test, n_classes)``). A subject's score is the mean over its
        windows.
    reference : str | tuple of (str, str) | list of these | None
        What the paired tests compare: a feature set name (then ``<ref>/<clf>`` is
        compared with ``<other>/<clf>`` for each classifier, and with each extra method),
        a full method name (compared with every other method), a ``(reference, other)``
        pair of method names (that test alone, e.g. ``("finetune", "linear_probe")``), a
        list of any of these (their tests in order, each pair once), or None for no
        comparison.
    preprocessors : dict of str to transformer | None
        A transformer fitted on the training rows of each fold before the classifier,
        per feature set. Default: :class:`~megfm.evaluate.baselines.RawPCA` for a feature
        set named ``"raw"``; pass ``{}`` for none.
    n_permutations : int
        Label permutations: each refits every classifier method on the same kind of folds
        (stratified on the permuted labels) and scores it. They give each classifier
        method's p-value against chance (one-sided, ``(1 + #{null >= observed}) /
        (1 + n)``), the paired tests between classifier methods (two-sided, the same share
        for the AUROC difference) and the intervals (the metric +- z x its standard
        deviation over the refits: the spread of the cross-validated metric with no
        effect). Cost: that many times the fits. With few subjects, when their labels
        admit at most ``n_permutations + 1`` distinct assignments, every other assignment
        is refitted once instead (the exact test; ``config["n_permutations"]`` is then the
        number refitted and ``config["exact_permutation_test"]`` is True). 0 skips the refits: then no p-values
        against chance, and intervals and paired tests come from the fixed out-of-fold
        scores (bootstrap, score swapping), which are too narrow (module docstring).
        Extra methods are never refitted; their intervals and tests always come from their
        fixed scores (``"interval": "bootstrap"`` in their metrics).
    n_bootstrap : int
        Bootstrap resamples of the intervals from fixed scores (extra methods, or
        ``n_permutations=0``).
    ci : float
        Coverage of the intervals.
    seed : int
        Seed of folds, classifiers, bootstrap and permutations.
    out : path-like | None
        Folder to write ``report.json``, ``report.md``, ``roc.png`` and ``scores.csv``.
    progress : bool
        Show a progress bar over the model fits.
    blas_threads : int | None
        BLAS threads during the fits (None leaves the setting alone). Study-sized
        problems (tens of subjects) run several times faster single-threaded than with
        threads competing for the cores.
    n_jobs : int | None
        Label permutations refitted in parallel processes (joblib; None = 1, -1 = every
        core). The result does not depend on it.

    Returns
    -------
    result : StudyResult

    Raises
    ------
    ValueError
        Single class, a subject with two labels, fewer subjects than folds, features and
        metadata of different lengths, a task naming an absent group, or bad parameters.
        Splits are always over subjects; there is no fallback to window-level splits.
    """
    feats, meta = _check_inputs(features, metadata)
    if level not in _LEVELS:
        raise ValueError(f"Invalid value for 'level': expected one of {_LEVELS}; got {level!r}.")
    if not 0 < ci < 1:
        raise ValueError(f"Invalid value for 'ci': expected a number in (0, 1), e.g. 0.95; "
                         f"got {ci}.")
    if int(n_permutations) != n_permutations or n_permutations < 0:
        raise ValueError("Invalid value for 'n_permutations': expected an integer >= 0 (0 = no "
                         f"refits on permuted labels); got {n_permutations}.")
    subjects_all = meta["subject"].astype(str)
    labels_all = meta["label"].astype(str)
    subject_labels(subjects_all, labels_all)  # a subject with two labels is an error
    classes = parse_task(task, labels_all)
    sel = np.flatnonzero(np.isin(labels_all, classes))
    subj_w, lab_w = subjects_all[sel], labels_all[sel]
    states_w = meta["state"].astype(str)[sel] if "state" in meta else np.zeros(len(sel), str)
    folds = subject_folds(subj_w, lab_w, n_splits=n_splits, n_repeats=n_repeats,
                          balanced_test=balanced_test, seed=seed)
    subjects, subj_label = subject_labels(subj_w, lab_w)
    y = np.array([classes.index(lab) for lab in subj_label], dtype=np.int64)
    n_sub, n_classes = len(subjects), len(classes)
    pos_of = {s: i for i, s in enumerate(subjects.tolist())}
    row_subject = np.array([pos_of[s] for s in subj_w.tolist()])  # window -> subject row
    state_order = np.unique(states_w)

    clfs = _resolve_classifiers(classifiers, seed)
    extra = dict(extra_methods or {})
    for name, fn in extra.items():
        if not callable(fn):
            raise TypeError(f"extra_methods[{name!r}] must be callable(train_idx, test_idx).")
    if preprocessors is None:
        from .baselines import RawPCA

        preprocessors = {"raw": RawPCA()} if "raw" in feats else {}
    methods = [f"{f}/{c}" for f in feats for c in clfs] + list(extra)
    if len(set(methods)) != len(methods):
        raise ValueError(f"Method names collide: {methods}; rename the extra methods.")
    pairs = _comparison_pairs(reference, list(feats), list(clfs), list(extra), methods)
    if n_classes == 2:
        acc = {m: np.full((n_repeats, n_sub), np.nan) for m in methods}
    else:
        acc = {m: np.full((n_repeats, n_sub, n_classes), np.nan) for m in methods}

    # design matrices
    designs = {}
    for name, x in feats.items():
        if level == "subject":
            designs[name] = subject_state_matrix(x[sel], subj_w, states_w,
                                                 subject_order=subjects, state_order=state_order)
        else:
            designs[name] = x[sel]
    missing = {n: int(np.isnan(d).all(axis=1).sum()) for n, d in designs.items()}

    n_fits = len(folds) * (len(feats) * len(clfs) + len(extra))
    bar = tqdm(total=n_fits, desc=f"study {task}", disable=not progress, leave=False)
    _fit_folds(folds, designs, clfs, extra, preprocessors, acc, sel, subj_w, y, pos_of,
               row_subject, level, n_sub, n_classes, bar, blas_threads)
    bar.close()

    scores = {m: _mean_over_repeats(a) for m, a in acc.items()}
    tested = _tested(scores[methods[0]])  # the same subjects for every method (same folds)
    yt = y[tested]
    null, exact = {}, False
    if int(n_permutations) > 0:
        null, exact = _refit_null(int(n_permutations), seed, folds, subjects, designs, clfs,
                           preprocessors, sel, subj_w, y, pos_of, row_subject, level, n_sub,
                           n_classes, blas_threads, progress, balanced_test, n_jobs)
    metrics, chance = {}, {}
    for i, m in enumerate(methods):
        s = scores[m][tested]
        pred = _predictions(s)
        if m in null:
            metrics[m] = _null_intervals(compute_metrics(yt, s, pred), null[m], ci)
            chance[m] = _upper_p(null[m]["auroc"], metrics[m]["auroc"]["value"])
        else:
            metrics[m] = {k: {**v, "interval": "bootstrap"} for k, v in bootstrap_metrics(
                yt, s, pred, n_bootstrap=n_bootstrap, ci=ci, seed=seed + i).items()}
    comparisons = []
    for ref, other in pairs:
        a, b = metrics[ref]["auroc"]["value"], metrics[other]["auroc"]["value"]
        if ref in null and other in null:
            null_diff = null[ref]["auroc"] - null[other]["auroc"]
            p, test = _upper_p(np.abs(null_diff), abs(a - b)), "label permutations"
        elif n_permutations > 0:
            p = paired_permutation_test(yt, scores[ref][tested], scores[other][tested],
                                        n_permutations=n_permutations, seed=seed)["p_value"]
            test = "swapped fixed scores"
        else:
            p, test = None, None
        comparisons.append({"reference": ref, "other": other, "auroc_reference": a,
                            "auroc_other": b, "difference": a - b, "p_value": p, "test": test})
    n_refits = len(next(iter(null.values()))["auroc"]) if null else 0
    config = {"n_splits": int(n_splits), "n_repeats": int(n_repeats),
              "balanced_test": bool(balanced_test), "seed": int(seed),
              "n_permutations": n_refits if null else int(n_permutations),
              "exact_permutation_test": exact,
              "n_bootstrap": int(n_bootstrap),
              "ci": float(ci), "classifiers": {k: repr(v) for k, v in clfs.items()},
              "feature_sets": {k: int(v.shape[1]) for k, v in feats.items()},
              "preprocessors": {k: repr(v) for k, v in preprocessors.items()},
              "extra_methods": list(extra),
              "reference": reference if reference is None or isinstance(reference, str)
              else [list(r) if isinstance(r, tuple) else r for r in
                    ([reference] if isinstance(reference, tuple) else reference)],
              "states": state_order.tolist() if level == "subject" else None,
              "subjects_without_features": missing}
    result = StudyResult(task=task, classes=classes, level=level, subjects=subjects, y=y,
                         tested=tested, scores=scores, metrics=metrics, comparisons=comparisons,
                         folds=folds, config=config, chance=chance, null=null)
    for m in methods:
        v = metrics[m]["auroc"]
        logger.info("%s: AUROC %.3f [%.3f, %.3f]", m, v["value"], v["ci_low"], v["ci_high"])
    if out is not None:
        result.save(out)
    return result


def _fit_folds(folds, designs, clfs, extra, preprocessors, acc, sel, subj_w, y, pos_of,
               row_subject, level, n_sub, n_classes, bar, blas_threads) -> None:
    """Fit every method on every fold; write out-of-fold subject scores into ``acc``."""
    for fold in folds:
        train_w, test_w = window_indices(fold, subj_w)  # positions within `sel`
        check_no_leak([(train_w, test_w)], subj_w)
        train_s = np.array([pos_of[s] for s in fold.train.tolist()])
        test_s = np.array([pos_of[s] for s in fold.test.tolist()])
        limits = (threadpool_limits(limits=int(blas_threads), user_api="blas")
                  if blas_threads is not None else contextlib.nullcontext())
        with limits:  # the extra methods (torch) keep their own threads
            for fname, X in designs.items():
                if level == "subject":
                    tr_rows, te_rows, y_tr = train_s, test_s, y[train_s]
                else:
                    tr_rows, te_rows, y_tr = train_w, test_w, y[row_subject[train_w]]
                X_tr, X_te = _impute(X[tr_rows], X[te_rows])
                for cname, clf in clfs.items():
                    steps = [clone(preprocessors[fname])] if fname in preprocessors else []
                    est = make_pipeline(*steps, clone(clf)) if steps else clone(clf)
                    est.fit(X_tr, y_tr)
                    s = _scores(est, X_te, n_classes)
                    _store(acc[f"{fname}/{cname}"], fold.repeat, s, te_rows if level == "subject"
                           else row_subject[te_rows], n_sub)
                    bar.update()
        for ename, fn in extra.items():
            s = np.asarray(fn(sel[train_w], sel[test_w]), dtype=np.float64)
            s = _check_extra_scores(ename, s, len(test_w), n_classes)
            _store(acc[ename], fold.repeat, s, row_subject[test_w], n_sub)
            bar.update()


def _refit_null(n_perm, seed, folds, subjects, designs, clfs, preprocessors, sel, subj_w, y,
                pos_of, row_subject, level, n_sub, n_classes, blas_threads, progress,
                balanced, n_jobs) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """Every metric of each classifier method refitted on ``n_perm`` label permutations,
    and whether those were every other assignment of the labels (the exact test)."""
    permuted = distinct_relabelings(y, limit=n_perm)
    exact = permuted is not None
    if not exact:
        rng = np.random.default_rng([int(seed), 1])
        # drawn here, in order, so the result does not depend on n_jobs
        permuted = [rng.permutation(y) for _ in range(n_perm)]
    n_perm = len(permuted)
    scheme = dict(n_repeats=max(f.repeat for f in folds) + 1,
                  n_splits=max(f.fold for f in folds) + 1, balanced_test=bool(balanced),
                  seed=seed)
    names = [f"{f}/{c}" for f in designs for c in clfs]
    common = (scheme, subjects, names, designs, clfs, preprocessors, sel, subj_w, pos_of,
              row_subject, level, n_sub, n_classes, blas_threads)
    null = {m: {k: np.empty(n_perm) for k in METRICS} for m in names}
    bar = tqdm(total=n_perm, desc="label permutations", unit="permutation",
               disable=not progress, leave=False)
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_refit_once)(y_perm, *common) for y_perm in permuted)
    for i, result in enumerate(runs):
        for m, values in result.items():
            for k, v in values.items():
                null[m][k][i] = v
        bar.update()
    bar.close()
    return null, exact


def distinct_relabelings(y: np.ndarray, *, limit: int) -> list[np.ndarray] | None:
    """Every other assignment of the class counts of ``y`` to its subjects, if few.

    With few subjects, random permutations mostly repeat the same few labelings. When
    there are at most ``limit + 1`` distinct assignments, refitting each one except the
    observed gives the exact permutation test (``(1 + #{null >= observed}) / (1 + n)``
    is then the share of all assignments at least as extreme). None when there are more.

    Parameters
    ----------
    y : ndarray of int, shape (n_subjects,)
        Class codes.
    limit : int
        Most relabelings to return.

    Returns
    -------
    list of ndarray | None
        The relabelings in a fixed order, the observed one left out.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    total = math.factorial(len(y))  # distinct assignments of the counts (multinomial)
    for c in counts:
        total //= math.factorial(int(c))
    if total - 1 > limit:
        return None
    out = []

    def assign(free: tuple[int, ...], k: int, labels: np.ndarray) -> None:
        if k == len(classes) - 1:
            labels[list(free)] = classes[k]
            if not np.array_equal(labels, y):
                out.append(labels.copy())
            return
        for chosen in itertools.combinations(free, int(counts[k])):
            labels[list(chosen)] = classes[k]
            assign(tuple(i for i in free if i not in chosen), k + 1, labels)

    assign(tuple(range(len(y))), 0, np.empty_like(y))
    return out


def _refit_once(y_perm, scheme, subjects, names, designs, clfs, preprocessors, sel, subj_w,
                pos_of, row_subject, level, n_sub, n_classes,
                blas_threads) -> dict[str, dict[str, float]]:
    """Metrics of each classifier method refitted on one permutation of the labels."""
    # folds stratified on the permuted labels, as the real ones are on the true labels
    perm_folds = subject_folds(subjects, y_perm.astype(str), **scheme)
    shape = (scheme["n_repeats"], n_sub) if n_classes == 2 else \
        (scheme["n_repeats"], n_sub, n_classes)
    acc = {m: np.full(shape, np.nan) for m in names}
    _fit_folds(perm_folds, designs, clfs, {}, preprocessors, acc, sel, subj_w, y_perm, pos_of,
               row_subject, level, n_sub, n_classes, tqdm(disable=True), blas_threads)
    out = {}
    for m in names:
        s = _mean_over_repeats(acc[m])
        ok = _tested(s)
        out[m] = compute_metrics(y_perm[ok], s[ok], _predictions(s[ok]))
    return out


def _mean_over_repeats(acc: np.ndarray) -> np.ndarray:
    """Each subject's out-of-fold score averaged over the repeats (NaN if never tested)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # untested subjects stay NaN
        return np.nanmean(acc, axis=0)


def _tested(scores: np.ndarray) -> np.ndarray:
    """Subjects with an out-of-fold score, from scores (n,) or (n, n_classes)."""
    return np.isfinite(scores) if scores.ndim == 1 else np.isfinite(scores).all(axis=1)


def _predictions(scores: np.ndarray) -> np.ndarray:
    """Hard class codes: probability >= 0.5 for two classes, else the most probable class."""
    return (scores >= 0.5).astype(np.int64) if scores.ndim == 1 else scores.argmax(axis=1)


def _upper_p(null: np.ndarray, observed: float) -> float:
    """Permutation p-value: the share of null values at least as large as ``observed``."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def _null_intervals(point: dict[str, float], null: dict[str, np.ndarray],
                    ci: float) -> dict[str, dict[str, float | str]]:
    """Each metric +- z x its standard deviation under label permutations, within [0, 1]."""
    z = float(norm.ppf(0.5 + ci / 2))
    out = {}
    for k, value in point.items():
        half = z * float(np.nanstd(null[k], ddof=1)) if len(null[k]) > 1 else np.nan
        out[k] = {"value": value, "ci_low": float(max(0.0, value - half)),
                  "ci_high": float(min(1.0, value + half)), "interval": "permutation"}
    return out


def _check_extra_scores(name: str, s: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    if n_classes == 2 and s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    expected = (n_test,) if n_classes == 2 else (n_test, n_classes)
    if s.shape != expected:
        raise ValueError(f"extra_methods[{name!r}] returned scores of shape {s.shape}; expected "
                         f"{expected} (one per test window).")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"extra_methods[{name!r}] returned NaN or infinite scores.")
    if n_classes == 2 and (s.min() < 0 or s.max() > 1):
        s = expit(s)  # decision values: map to (0, 1) keeping the order
    return s


def _store(acc: np.ndarray, repeat: int, s: np.ndarray, subject_rows: np.ndarray,
           n_sub: int) -> None:
    """Average scores per subject and write them into the accumulator of one repeat."""
    counts = np.bincount(subject_rows, minlength=n_sub).astype(np.float64)
    rows = np.flatnonzero(counts)
    if s.ndim == 1:
        sums = np.bincount(subject_rows, weights=s, minlength=n_sub)
        acc[repeat, rows] = sums[rows] / counts[rows]
    else:
        for k in range(s.shape[1]):
            sums = np.bincount(subject_rows, weights=s[:, k], minlength=n_sub)
            acc[repeat, rows, k] = sums[rows] / counts[rows]

