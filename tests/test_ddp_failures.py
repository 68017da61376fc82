"""A non-finite loss on one rank of a 2-process DDP run stops every rank with one message."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import training_helpers as helpers

SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    import lightning.pytorch as pl
    from megfm.training import pretrain

    torch.set_num_threads(1)
    store, out = sys.argv[1], sys.argv[2]

    class Poison(pl.Callback):
        """NaN in one sample of rank 1's second batch only."""

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_rank == 1 and batch_idx == 1:
                batch["x"][0, 0, 0] = float("nan")

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        pretrain(store, out, max_steps=4, batch_size=4, devices=2, accelerator="cpu",
                 strategy="ddp", val_fraction=0.2, progress=False, seed=0,
                 callbacks=[Poison()], checkpoint_every=4)
    except FloatingPointError as err:
        with open(f"{out}.rank{rank}.txt", "w") as f:
            f.write(str(err))
        sys.exit(3)
''')


def test_nan_on_one_rank_stops_every_rank_with_one_message(tmp_path):
    store = helpers.tiny_store(tmp_path / "store", n_windows=40, n_subjects=10)
    out = tmp_path / "run"
    # without the agreement rank 0 would wait in the gradient all-reduce until the timeout
    proc = helpers.run_ddp_script(SCRIPT, tmp_path, store, out, timeout=120)
    assert proc.returncode == 3, proc.stderr[-3000:]
    files = [Path(f"{out}.rank{r}.txt") for r in (0, 1)]
    deadline = time.monotonic() + 30  # rank 1 is a child process of rank 0
    while not all(f.is_file() for f in files) and time.monotonic() < deadline:
        time.sleep(0.2)
    messages = [f.read_text() for f in files]
    assert messages[0] == messages[1], messages
    assert "rank 1: Window(s) with store index [" in messages[0]
    assert "NaN or Inf samples (train, global step 1)" in messages[0]
    assert "rank 0" not in messages[0] and "every rank stops here" in messages[0]


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()
