"""Fault injection: SIGKILL `prepare` and `pretrain` at random points, then check what is left.

Each killed run is a child process that SIGKILLs itself at a drawn point of its writes (a
window written to a shard, a file renamed into place, a training step, a checkpoint being
saved or rotated), or the real CLI killed from outside after a drawn delay. The child is
forked from the test process, so it starts in milliseconds with megfm already imported.
After the kill, the same command is run again (``--resume`` for pretrain) and the result
must equal an uninterrupted run: the store complete, without duplicates, bit-identical;
the weights identical. Draws come from ``MEGFM_FAULT_SEED`` (default 0).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import training_helpers as helpers
from cli_helpers import one_error_line

from megfm.cli.main import main
from megfm.data.store import open_store, read_store

SEED = int(os.environ.get("MEGFM_FAULT_SEED", "0"))
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for the whole module, module fixtures included: the reference run
    and the killed and resumed runs must sum in the same order to give equal weights (a
    test elsewhere may leave torch with more threads)."""
    yield from helpers.one_thread()


def _in_child(run, arm) -> str:
    """Run ``run()`` in a forked child after ``arm()`` set its kill point; how did it end?"""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            arm()
            code = 0 if run() in (None, 0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return "killed"
    assert os.WEXITSTATUS(status) == 0, "the child failed without being killed"
    return "finished"


def _kill_at_event(k: int) -> None:
    """SIGKILL this process at the k-th write event (a window written, a rename, an fsync)."""
    import h5py

    count = [0]

    def hit():
        count[0] += 1
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)

    set_item, replace, fsync = h5py.Dataset.__setitem__, os.replace, os.fsync

    def set_item_hit(self, *args):
        hit()
        return set_item(self, *args)

    def replace_hit(*args, **kwargs):
        hit()  # before the rename
        replace(*args, **kwargs)
        hit()  # and right after it

    def fsync_hit(fd):
        fsync(fd)
        hit()

    h5py.Dataset.__setitem__ = set_item_hit
    os.replace, os.fsync = replace_hit, fsync_hit


# ---------------------------------------------------------------------------- prepare
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Five short recordings, and the store an uninterrupted prepare makes of them."""
    from test_prepare import _raw

    root = tmp_path_factory.mktemp("fault")
    folder = root / "cohort"
    folder.mkdir()
    for k in range(5):
        _raw(seconds=4.0 + k, seed=k).save(folder / f"sub-{k:02d}_task-rest_raw.fif",
                                           verbose=False)
    clean = root / "clean"
    assert main(["prepare", str(folder), "--out", str(clean), "--window", "1",
                 "--no-progress"]) == 0
    return folder, clean


def _by_source(path: Path) -> dict[tuple[str, float], np.ndarray]:
    """Every window of a store keyed by (recording file, onset); fails on duplicates."""
    windows = read_store(path)
    sources = [Path(info["source"]).name for info in open_store(path).shard_infos]
    assert len(sources) == len(set(sources)), f"a recording is in {path} twice: {sources}"
    keys = [(sources[r], round(float(o), 6)) for r, o in
            zip(windows.metadata["recording"], windows.metadata["onset"], strict=True)]
    assert len(keys) == len(set(keys)), "duplicated windows"
    return {key: windows.data[i] for i, key in enumerate(keys)}


def _count_events(run) -> int:
    """Write events of an uninterrupted run (counted in a child that is never killed)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import h5py

            n = [0]
            set_item, replace, fsync = h5py.Dataset.__setitem__, os.replace, os.fsync

            def count(fn, events=1):
                def wrapped(*args, **kwargs):
                    n[0] += events
                    return fn(*args, **kwargs)
                return wrapped

            h5py.Dataset.__setitem__ = count(set_item)
            os.replace, os.fsync = count(replace, 2), count(fsync)
            run()
            os.write(writer, str(n[0]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    os.waitpid(pid, 0)
    with os.fdopen(reader) as fid:
        return int(fid.read())


def _prepare_kill_points(cohort, tmp_path, n_points: int) -> None:
    folder, clean = cohort
    want = _by_source(clean)
    args = [str(folder), "--window", "1", "--no-progress"]

    def prepare(out):
        return lambda: main(["prepare", *args, "--out", str(out)])

    n_events = _count_events(prepare(tmp_path / "count"))
    assert n_events > 30  # windows, shard renames, manifest writes
    rng = np.random.default_rng(SEED)
    points = rng.choice(np.arange(1, n_events + 1), size=n_points, replace=False)
    for k in sorted(points.tolist()):
        out = tmp_path / f"store-{k}"
        ended = _in_child(prepare(out), lambda k=k: _kill_at_event(k))
        assert ended == "killed", f"kill point {k} of {n_events} was never reached"
        # the re-run completes the store: every window once, bit-identical to a clean run
        assert main(["prepare", *args, "--out", str(out)]) == 0, f"re-run after kill {k}"
        got = _by_source(out)
        assert got.keys() == want.keys(), f"kill point {k}: windows lost or added"
        for key, data in want.items():
            np.testing.assert_array_equal(got[key], data, err_msg=f"kill point {k}, {key}")


def test_prepare_killed_at_20_random_points_then_rerun_is_complete(cohort, tmp_path):
    """Target of issue 20: 0 duplicated and 0 lost windows over 20 kill points."""
    _prepare_kill_points(cohort, tmp_path, n_points=20)


def test_prepare_cli_killed_from_outside_then_rerun_is_complete(cohort, tmp_path):
    folder, clean = cohort
    want = _by_source(clean)
    cmd = [sys.executable, "-m", "megfm.cli.main", "prepare", str(folder), "--window", "1",
           "--no-progress", "--out", str(tmp_path / "store")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    rng = np.random.default_rng(SEED + 1)
    killed = False
    for _ in range(5):  # kill after a drawn delay, until one kill lands mid-run
        shutil.rmtree(tmp_path / "store", ignore_errors=True)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (tmp_path / "store" / "store.json").exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))  # somewhere after the first recording
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and len(open_store(tmp_path / "store")) < len(want):
            killed = True
            break
    assert killed, "no kill landed in the middle of the run"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "already in the store" in done.stdout
    got = _by_source(tmp_path / "store")
    assert got.keys() == want.keys()
    for key, data in want.items():
        np.testing.assert_array_equal(got[key], data)


def test_two_prepare_commands_on_one_new_store_never_mix(cohort, tmp_path):
    folder, clean = cohort
    cmd = [sys.executable, "-m", "megfm.cli.main", "prepare", str(folder), "--window", "1",
           "--no-progress", "--out", str(tmp_path / "store")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(), p.stdout.read(), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _, _ in results), results
    for code, _, err in results:  # the loser, if they overlapped, fails at once naming the pid
        assert code == 0 or ("is being written by pid" in err and "Traceback" not in err), err
    got, want = _by_source(tmp_path / "store"), _by_source(clean)
    assert got.keys() == want.keys()
    for key, data in want.items():
        np.testing.assert_array_equal(got[key], data)


# ---------------------------------------------------------------------------- pretrain
_STEPS = 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _one_thread):
    """A tiny store and the weights of an uninterrupted 8-step run on it."""
    root = tmp_path_factory.mktemp("pretrain")
    store = helpers.tiny_store(root / "store", n_windows=24)
    out = root / "full"
    assert main(_pretrain_args(store, out)) == 0
    return store, _weights(out), out


def _pretrain_args(store, out):
    return ["pretrain", str(store), "--out", str(out), "--max-steps", str(_STEPS),
            "--batch-size", "4", "--accelerator", "cpu", "--no-progress", "--val-fraction", "0",
            "--checkpoint-every", "2", "--seed", "5"]


def _weights(out):
    from safetensors.torch import load_file

    return load_file(out / "model" / "model.safetensors")


def _kill_in_training(step: int, phase: str) -> None:
    """SIGKILL at optimiser step ``step``: before it, or while its checkpoint is written."""
    from megfm.training import _checkpoints
    from megfm.training.module import PretrainModule

    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if phase == "step":
        training_step = PretrainModule.training_step

        def step_then_die(self, batch, batch_idx):
            if self.global_step == step:
                die()
            return training_step(self, batch, batch_idx)

        PretrainModule.training_step = step_then_die
        return
    rotate, calls = _checkpoints.rotate, [0]

    def rotate_then_die(folder, **kwargs):
        calls[0] += 1
        if calls[0] == step // 2 and phase == "saving":
            die()  # the new checkpoint is complete under its .partial name only
        rotate(folder, **kwargs)
        if calls[0] == step // 2:
            die()  # last.ckpt moved to previous-step=N.ckpt, the new one not in place yet

    _checkpoints.rotate = rotate_then_die


def _pretrain_kill_points(reference, tmp_path, capsys, n_points: int) -> None:
    import torch

    from megfm.training import _checkpoints

    store, want, _ = reference
    rng = np.random.default_rng(SEED)
    steps = rng.choice(np.arange(1, _STEPS), size=n_points, replace=False)
    for i, step in enumerate(steps.tolist()):
        phase = str(rng.choice(["step", "saving", "rotating"]))
        if phase != "step":
            step = max(2, step - step % 2)  # checkpoints are written at even steps
        out = tmp_path / f"run-{i}-{step}-{phase}"
        # a child whose main() returns (an error) instead of being killed reads "finished"
        assert _in_child(lambda out=out: main(_pretrain_args(store, out)),
                         lambda step=step, phase=phase: _kill_in_training(step, phase)) \
            == "killed"
        code = main(_pretrain_args(store, out) + ["--resume"])
        if code == 1:  # killed before its first checkpoint was in place: restart it
            assert not _checkpoints.candidates(out / "checkpoints")
            assert "stopped before its first checkpoint" in capsys.readouterr().err
            code = main(_pretrain_args(store, out) + ["--overwrite"])
        assert code == 0, f"resume after a kill at step {step} ({phase}) failed"
        got = _weights(out)
        assert all(torch.equal(got[k], want[k]) for k in want), \
            f"weights differ after a kill at step {step} ({phase})"


def test_pretrain_killed_at_5_random_points_resumes_to_the_same_weights(reference, tmp_path,
                                                                        capsys):
    """Target of issue 20: resumed weights equal uninterrupted ones over 5 kill points."""
    _pretrain_kill_points(reference, tmp_path, capsys, n_points=5)


# ---------------------------------------------------------------------------- corruption
def _one_line(capsys) -> str:
    return one_error_line(capsys.readouterr().err)


def test_random_bytes_in_a_shard_or_checkpoints_give_one_line(reference, tmp_path, capsys):
    import h5py

    store, _, run = reference
    rng = np.random.default_rng(SEED + 2)
    n = len(open_store(store))
    for i, index in enumerate(rng.choice(n, size=3, replace=False).tolist()):
        bad = tmp_path / f"store-{i}"
        shutil.copytree(store, bad)
        with h5py.File(bad / "shard-00000.h5", "r") as f:
            chunk = f["data"].id.get_chunk_info_by_coord((index, 0, 0))
        with open(bad / "shard-00000.h5", "r+b") as fid:
            fid.seek(chunk.byte_offset + int(rng.integers(0, chunk.size - 64)))
            fid.write(rng.bytes(64))
        assert main(["embed", str(run), str(bad), "--out", str(tmp_path / f"f{i}.npz"),
                     "--no-progress"]) == 1
        err = _one_line(capsys)
        assert f"window {index} (row {index})" in err and "checksum does not match" in err
    # every checkpoint cut at a drawn length: one line, the way forward, no torch advice
    cut = tmp_path / "run"
    shutil.copytree(run, cut)
    for path in (cut / "checkpoints").glob("*.ckpt"):
        data = path.read_bytes()
        path.write_bytes(data[: int(rng.integers(0, len(data)))])
    assert main(_pretrain_args(store, cut)[:-2] + ["--seed", "5", "--max-steps", "10",
                                                   "--resume"]) == 1
    err = _one_line(capsys)
    assert "no checkpoint in" in err and "--overwrite" in err and "weights_only" not in err
