"""A run interrupted mid-epoch resumes on another number of processes (gloo, CPU) and sees
every training window of the epoch exactly once across the interruption."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import training_helpers as helpers

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    import lightning.pytorch as pl
    from megfm.training import pretrain

    torch.set_num_threads(1)
    store, out, devices, max_steps, resume, log = sys.argv[1:7]

    class Record(pl.Callback):
        """Store indices of every training batch, per rank and epoch."""

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            with open(f"{log}.rank{trainer.global_rank}", "a") as f:
                f.write(json.dumps([trainer.current_epoch, batch["index"].tolist()]) + "\\n")

    pretrain(store, out, max_steps=int(max_steps), batch_size=4, devices=int(devices),
             accelerator="cpu", strategy="ddp" if int(devices) > 1 else "auto",
             val_fraction=0.2, progress=False, seed=0, callbacks=[Record()],
             checkpoint_every=1, resume=resume == "1")
''')


def _seen(log: Path, epoch: int) -> list[int]:
    seen = []
    for f in sorted(log.parent.glob(log.name + ".rank*")):
        for line in f.read_text().splitlines():
            e, index = json.loads(line)
            seen += index if e == epoch else []
    return seen


@pytest.mark.parametrize(("source", "before", "after", "steps_before", "steps_after"),
                         [("store", 2, 1, 2, 4), ("store", 1, 2, 3, 3), ("litdata", 2, 1, 2, 4)])
def test_resume_on_another_number_of_processes_sees_each_window_once(
        tmp_path, source, before, after, steps_before, steps_after):
    # 40 windows of 10 subjects, 8 of them validation: 32 training windows, batches of 4
    store = helpers.tiny_store(tmp_path / "store", n_windows=40, n_subjects=10)
    if source == "litdata":  # the streaming format resumes through the same loader state
        pytest.importorskip("litdata")
        from megfm.data.streaming import export_litdata

        store = export_litdata(store, tmp_path / "export", chunk_bytes="16KB")
    out, log = tmp_path / "run", tmp_path / "seen"
    first = helpers.run_ddp_script(SCRIPT, tmp_path, store, out, before, steps_before, 0,
                                   tmp_path / "first", timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    head = _seen(tmp_path / "first", 0)
    assert len(head) == steps_before * before * 4 < 32  # stopped in the middle of epoch 0
    second = helpers.run_ddp_script(SCRIPT, tmp_path, store, out, after,
                                    steps_before + steps_after, 1, log, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    tail = _seen(log, 0)
    assert not set(head) & set(tail)
    assert len(head) + len(tail) == 32 and len(set(head + tail)) == 32, [f.read_text() for f in tmp_path.glob("seen.rank*")]


@pytest.fixture(autouse=True)
def _one_thread():
    yield from helpers.one_thread()
