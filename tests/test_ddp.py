"""DDP through Lightning: 2 CPU processes (gloo) see disjoint data and end with equal weights."""

from __future__ import annotations

import json
import textwrap

import pytest
import training_helpers as helpers

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import lightning.pytorch as pl
    from megfm.training import pretrain

    torch.set_num_threads(1)
    store, out = sys.argv[1], sys.argv[2]

    class Record(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.extend(batch["index"].tolist())

        def on_train_end(self, trainer, module):
            flat = torch.cat([p.detach().flatten() for p in module.model.parameters()])
            with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
                json.dump({"seen": self.seen, "world_size": trainer.world_size,
                           "weights": flat.tolist()}, f)

    pretrain(store, out, max_steps=3, batch_size=4, devices=2, accelerator="cpu",
             strategy="ddp", val_fraction=0.2, progress=False, seed=0,
             callbacks=[Record()], checkpoint_every=3)
''')


def test_ddp_two_cpu_processes(tmp_path):
    store = helpers.tiny_store(tmp_path / "store", n_windows=40, n_subjects=10)
    out = tmp_path / "run"
    proc = helpers.run_ddp_script(SCRIPT, tmp_path, store, out, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert seen0 and seen1 and not seen0 & seen1  # disjoint shards of the training set
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were all-reduced
    assert (out / "model" / "config.json").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()
