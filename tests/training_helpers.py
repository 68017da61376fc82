"""Helpers of the training, embedding, fine-tuning and reconstruction tests: tiny seeded
windows, batches and stores."""

from __future__ import annotations

import numpy as np
import torch


def tiny_windows(n_windows: int = 24, n_sensors: int = 6, n_times: int = 160, *,
                 sfreq: float = 200.0, n_subjects: int = 6, states=("rest", "auditory"),
                 seed: int = 0):
    """Seeded Windows: alpha-like sinusoids + noise on a small sensor layout (fT)."""
    from megfm.data import SensorGeometry, Windows

    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, n_sensors, endpoint=False)
    pos = np.c_[0.1 * np.cos(theta), 0.1 * np.sin(theta), np.full(n_sensors, 0.05)]
    ori = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    geom = SensorGeometry(names=[f"MEG{i:03d}" for i in range(n_sensors)], positions=pos,
                          orientations=ori, types=np.zeros(n_sensors, int))
    t = np.arange(n_times) / sfreq
    phase = rng.uniform(0, 2 * np.pi, (n_windows, 1, 1))
    gain = np.cos(theta)[None, :, None] + 1.5
    data = 100 * gain * np.sin(2 * np.pi * 10 * t + phase) + 10 * rng.standard_normal(
        (n_windows, n_sensors, n_times))
    subjects = np.array([f"{i % n_subjects:02d}" for i in range(n_windows)])
    labels = np.array(["HC" if int(s) % 2 == 0 else "migraine" for s in subjects])
    state = np.array([states[(i // n_subjects) % len(states)] for i in range(n_windows)])
    return Windows(data=data.astype(np.float32), sfreq=sfreq, geometries=[geom],
                   metadata={"subject": subjects, "label": labels, "state": state})


def windows_batch(windows, idx=None):
    """The :class:`megfm.data.Batch` of some windows (all by default)."""
    from megfm.data import windows_batch

    return windows_batch(windows, np.arange(windows.n_windows) if idx is None else idx)


def tiny_model(seed: int = 0, **changes):
    """An untrained tiny MaskedSignalModel for 200 Hz windows, seeded."""
    from megfm.models import MaskedSignalModel, ModelConfig

    torch.manual_seed(seed)
    return MaskedSignalModel(ModelConfig.preset("tiny", **changes))


def tiny_store(path, windows=None, **kwargs):
    """Write tiny windows to a store at ``path`` and return the path."""
    from megfm.data.store import write_store

    write_store(tiny_windows(**kwargs) if windows is None else windows, path)
    return path


def one_thread():
    """Generator for an autouse fixture: run a test with one torch thread, then restore.

    Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two
    contending threads make them many times slower.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_ddp_script(script_text: str, tmp_path, *args: str, timeout: float = 180.0):
    """Run ``script_text`` as a 2-process gloo job (Lightning spawns rank 1) and return the
    completed process; megfm is importable from this checkout, one thread per process."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run_ddp.py"
    script.write_text(script_text)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
