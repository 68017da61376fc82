"""Where does the model look? Attention topomaps per state, and an attribution map.

What it shows
-------------
1. ``megfm.explain.attention_maps`` averages the model's spatial cross-attention (latent
   queries over sensors) per state; ``plot_state_topomaps`` writes one topomap PNG per
   state (one panel per sensor type). With the simulator's ``ground_truth.json`` each
   map gets an alignment score with the sensors the planted sources should light up
   (1 = no better than a uniform map).
2. A migraine-vs-HC classifier (logistic regression on window embeddings) is folded into a
   differentiable head (``LinearHead.from_sklearn``) on top of the encoder
   (``EncoderClassifier``), and ``megfm.explain.attribute`` computes integrated gradients
   of its decision back to the input samples of a few auditory windows.
3. The attribution's sensor map is plotted as a topomap and projected to the sources
   (sphere head model, minimum norm); ``rank_regions`` ranks the simulator's named regions
   (auditory cortex, S1, ...) by their share of the projected power.
4. ``decision_pattern`` asks the data instead of the gradients: per subject, how each
   sensor's theta power moves with the classifier's migraine log-odds (the classifier's
   activation pattern); its positive part is ranked to regions the same way, with the
   noise reference.

With ``--quick`` the model is pretrained for only 15 steps, so its attention is still
close to uniform (about 1/n_sensors everywhere) and the scores are near 1; run without
``--quick`` for maps with structure.

Run
---
    python examples/04_attention_attribution.py --quick --out /tmp/ex04

Writes ``figures/attention_<state>.png`` (one per state), ``attribution_topomap.png`` and
``regions.md`` (attribution and decision-pattern tables) in ``--out`` (default: a new temporary folder), next to the shared cohort,
store and model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick_data import get_quick_data, parse_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args, out = parse_args(__doc__, "04", argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import megfm
    from megfm.explain import (
        EncoderClassifier,
        LinearHead,
        attention_maps,
        attribute,
        decision_pattern,
        format_region_table,
        plot_sensor_map,
        plot_state_topomaps,
        rank_regions,
    )
    from megfm.simulate import sensor_array

    data = get_quick_data(out, quick=args.quick)
    model = megfm.load_pretrained(data["model"])
    truth = json.loads(Path(data["ground_truth"]).read_text())
    # global store indices of the windows to look at: every 4th in quick mode (4x faster)
    n_store = len(megfm.WindowDataset(data["store"]))  # reads the metadata only
    index = np.arange(0, n_store, 4 if args.quick else 1)
    windows = megfm.read_store(data["store"], indices=index)

    # --- 1. attention topomaps per state ------------------------------------------------------
    maps = attention_maps(model, windows, by=("state",), rollout=False, batch_size=32)
    figures = plot_state_topomaps(maps, out / "figures", kind="spatial", prefix="attention")
    print(f"attention maps of {len(maps.keys)} states -> {len(figures)} PNGs in "
          f"{out / 'figures'}")
    expected = truth.get("expected_sensors", {})
    for key in maps.keys:
        weights = maps.get(key)
        top = [maps.names[i] for i in np.argsort(np.nan_to_num(weights, nan=-1))[::-1][:3]]
        line = f"  {key[0]:<14} n={maps.n_windows[key]:<4} top sensors: {', '.join(top)}"
        if expected.get(key[0]):
            line += f"  alignment {maps.alignment(expected[key[0]], key):.2f}x uniform"
        print(line)

    # --- 2. a differentiable classifier and its integrated gradients ------------------------------
    feats, meta = megfm.embed(model, windows, pooling="mean", progress=False)
    y = (meta["label"] == "migraine").astype(int)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(feats, y)
    classifier = EncoderClassifier(model, LinearHead.from_sklearn(clf)).eval()
    auditory = np.flatnonzero(windows.metadata["state"] == "auditory")
    n_explain = 8 if args.quick else 64
    chosen = auditory[np.linspace(0, len(auditory) - 1, n_explain).astype(int)]
    subset = megfm.read_store(data["store"], indices=index[chosen])
    attr = attribute(classifier, subset, method="integrated_gradients", target=1,
                     n_steps=8 if args.quick else 32)
    print(f"integrated gradients of the 'migraine' logit on {len(chosen)} auditory windows: "
          f"values {attr.values.shape}")

    # --- 3. attribution topomap and ranked regions ------------------------------------------------
    sensor_map, geometry = attr.sensor_map()
    fig = plot_sensor_map(sensor_map, geometry, sensor_type="mag",
                          title="|IG| per magnetometer, auditory windows")
    fig.savefig(out / "attribution_topomap.png", dpi=100)
    plt.close(fig)

    # The simulator's arrays sit in the device frame; give the device->head transform so
    # the projection places the sensors around the head.
    dev_head_t = sensor_array(truth["array"])["dev_head_t"]
    table = rank_regions(sensor_map, geometry, truth["regions"], dev_head_t=dev_head_t)
    text = format_region_table(table)
    print(format_region_table(table, top=5))

    # --- 4. the decision pattern: where theta power moves with the decision --------------------
    pattern = decision_pattern(classifier, windows, target=1, band=(4.0, 8.0),
                               groups=windows.metadata["subject"])
    print(f"decision pattern over {len(pattern.units)} subjects: strongest sensor "
          f"{pattern.geometry.names[int(np.nanargmax(pattern.values))]} "
          f"(r = {np.nanmax(pattern.values):.2f})")
    pattern_table = rank_regions(pattern.positive(), pattern.geometry, truth["regions"],
                                 dev_head_t=dev_head_t, reference="noise",
                                 n_null=10 if args.quick else 40)
    (out / "regions.md").write_text(
        "# Regions ranked by attribution (auditory windows)\n\n" + text + "\n\n"
        "# Regions ranked by the decision pattern (theta, noise reference)\n\n"
        + format_region_table(pattern_table) + "\n")
    print(f"figures: {out / 'attribution_topomap.png'} and {len(figures)} attention topomaps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
