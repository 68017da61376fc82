"""Which read-out of a pretrained encoder carries the group effect? (issue 17's read-out lever)

For one checkpoint and the same architecture with random weights, on labelled stores, each
read-out of the encoder's latents is scored by the same study (logistic regression, 5
subject folds, 200 label permutations), with and without a PCA-20 fitted in the training folds
(the reduction raw signals get):

* ``final``: mean over time patches and latents of the final latents (``megfm.embed``);
* ``block<i>``: the same of each block's layer-normalised latents; ``layers``: their mean;
* ``logvar<i>``: log-variance of each block's latents over time patches and latents;
* ``final_k``: the final latents averaged over time but kept per latent query (K x D).

Raw signals and relative band power are scored on the same folds. ``--spread-only`` instead
measures how far apart the K latents of a time patch are (the norm of their deviation from
their mean over the latents, over their norm) and their spatial attention maps, for the
checkpoint and the random-weight encoders, on the first windows of each store.

Run::

    python benchmarks/bench_readouts.py --quick        # tiny model, small cohort (~2 min)
    python benchmarks/bench_readouts.py --checkpoint RUN/model --stores S202 S203 S303 \
        --out benchmarks/results/readouts.json
    python benchmarks/bench_readouts.py --checkpoint RUN/model --stores S204 S205 S304 \
        --readouts 'block1|none,final|none'   # only the read-outs a screen pre-registered
    python benchmarks/bench_readouts.py --checkpoint RUN/model --stores S202 --spread-only \
        --out benchmarks/results/latent_spread.json

Without ``--out`` the JSON goes to the git-ignored ``benchmarks/scratch/``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import parse_args, write_json

from megfm.embedding import data_sfreq, iter_batches, load_model, store_metadata
from megfm.evaluate import run_study
from megfm.evaluate.baselines import RawPCA, raw_features, spectral_features
from megfm.evaluate.card import layer_features, random_encoder

#: Reductions applied to every read-out before the study: none, or a PCA to 20 components
#: fitted in the training folds (what raw signals get).
REDUCTIONS = ("none", "pca20")


def all_readouts(net, final, blocks) -> dict[str, torch.Tensor]:
    """Every read-out of the module docstring for one batch (a ``layer_features`` read-out)."""
    out = {"final": final.mean((1, 2)), "final_k": final.mean(1).flatten(1)}
    normed = [torch.nn.functional.layer_norm(z.float(), z.shape[-1:]) for z in blocks]
    for i, z in enumerate(normed):
        out[f"block{i + 1}"] = z.mean((1, 2))
        out[f"logvar{i + 1}"] = torch.log(z.flatten(1, 2).var(1) + 1e-6)
    out["layers"] = torch.stack([z.mean((1, 2)) for z in normed]).mean(0)
    return out


def readouts(net, store, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every read-out of the module docstring, rows in the store's window order."""
    return layer_features(net, store, batch_size=batch_size, device="cpu",
                          readout=all_readouts)


def encoders(model, seeds) -> dict:
    """The checkpoint and random-weight encoders of its configuration, by name."""
    return {"megfm": model, **{f"random{s}": random_encoder(model.config, s) for s in seeds}}


def latent_spread(net, store, n_windows: int = 256) -> dict[str, float]:
    """How far apart the K latents of a time patch are, and their spatial attention maps."""
    sfreq = data_sfreq(store)
    batches = iter_batches(store, batch_size=64, indices=np.arange(n_windows))
    next(batches)
    dev = {"latents": [0.0, 0.0], "attention": [0.0, 0.0]}
    with torch.inference_mode():
        for batch in batches:
            latents, extras = net.eval().forward_features(**batch.inputs(), sfreq=sfreq,
                                                          return_attention=True)
            for key, z in (("latents", latents), ("attention", extras["spatial"])):
                dev[key][0] += float((z - z.mean(2, keepdim=True)).square().sum())
                dev[key][1] += float(z.square().sum())
    return {key: round((a / b) ** 0.5, 4) for key, (a, b) in dev.items()}


def score_store(model, store, random_seeds, n_permutations: int,
                only: list[str] | None = None) -> dict:
    from megfm.data.store import read_store

    windows = read_store(store)
    base = {"raw": raw_features(windows)[0], "spectral": spectral_features(windows)[0]}
    del windows
    meta = store_metadata(store)
    nets = encoders(model, random_seeds)
    per = {name: readouts(net, store) for name, net in nets.items()}
    rows = {}
    for readout in per["megfm"]:
        for reduction in REDUCTIONS:
            if only and f"{readout}|{reduction}" not in only:
                continue
            feats = {name: per[name][readout] for name in nets} | base
            prep = {"raw": RawPCA()} | ({n: RawPCA() for n in nets} if reduction == "pca20" else {})
            study = run_study(feats, meta, classifiers=["logreg"], preprocessors=prep,
                              reference="megfm", n_permutations=n_permutations,
                              n_bootstrap=200, progress=False)
            auroc = {m.split("/")[0]: round(v["auroc"]["value"], 3)
                     for m, v in study.metrics.items()}
            p = {c["other"].split("/")[0]: round(c["p_value"], 4) for c in study.comparisons}
            rows[f"{readout}|{reduction}"] = {"auroc": auroc, "p_megfm_vs": p}
            rnd = [auroc[f"random{s}"] for s in random_seeds]
            print(f"{Path(store).name:>28} {readout:>8} {reduction:>5} | megfm "
                  f"{auroc['megfm']:.2f} | random {' '.join(f'{r:.2f}' for r in rnd)} | "
                  f"raw {auroc['raw']:.2f} | spectral {auroc['spectral']:.2f}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny untrained model, small cohort")
    ap.add_argument("--checkpoint", default=None, help="model folder (or run folder)")
    ap.add_argument("--stores", nargs="*", default=[], help="labelled study stores")
    ap.add_argument("--random-seeds", default="0,1,2")
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--readouts", default="",
                    help="score only these READOUT|REDUCTION pairs, comma-separated (e.g. "
                         "'block1|none,final|none': a confirmation of pre-registered read-outs "
                         "on large cohorts); default every read-out")
    ap.add_argument("--spread-only", action="store_true",
                    help="only how far apart the K latents of a time patch are")
    args = parse_args(ap, argv, "readouts")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.random_seeds.split(",") if s]
    only = [r for r in args.readouts.split(",") if r]
    t0 = time.perf_counter()
    if args.quick:
        import megfm

        work = Path(tempfile.mkdtemp(prefix="megfm_readouts_"))
        megfm.simulate_cohort(work / "cohort", n_subjects=10, duration=12.0, states=["rest"],
                              seed=202, verbose=False)
        megfm.prepare([work / "cohort"], work / "store", window_seconds=1.0, progress=False,
                      verbose=False)
        stores = [work / "store"]
        model, seeds, n_perm = load_model("tiny"), [1], 100  # tiny is seeded 0
    else:
        if not args.checkpoint or not args.stores:
            ap.error("pass --checkpoint and --stores (or --quick)")
        stores, model, n_perm = args.stores, load_model(args.checkpoint), args.permutations
    # the read-out names of this model's depth, from all_readouts itself on a dummy batch
    dummy = torch.zeros(1, 2, 2, model.config.dim)
    names = all_readouts(model, dummy, [dummy] * len(model.blocks))
    known = [f"{r}|{red}" for r in names for red in REDUCTIONS]
    if set(only) - set(known):
        ap.error(f"unknown --readouts {sorted(set(only) - set(known))}; this model has "
                 f"{', '.join(known)}")
    result = {"args": vars(args), "stores": {}}
    for store in stores:
        if args.spread_only:
            result["stores"][str(store)] = {name: latent_spread(net, store)
                                            for name, net in encoders(model, seeds).items()}
            print(Path(store).name, result["stores"][str(store)], flush=True)
        else:
            result["stores"][str(store)] = score_store(model, store, seeds, n_perm, only)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print("->", write_json(args.out, result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
