"""The throughput benchmark's own machinery (benchmarks/bench_peers.py).

Measurements are replaced by a stand-in that records the order of events, so these tests
check how the run is organised (times before the allocator change, memory after it), not
how fast anything is.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bp = pytest.importorskip("bench_peers")


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Replace the measurement and the allocator switch by recorders."""
    events = []
    state = {"malloc_fixed": False}

    def fake_measure(build, batch, *, device, warmup, steps, seed=0):
        events.append(("measure", state["malloc_fixed"], batch["x"].shape[1]))
        # a time that only the timing pass may report, a memory only the memory pass may
        return {"params": 1, "params_used": 1, "step_s": 0.5,
                "windows_per_s": 10.0 if not state["malloc_fixed"] else -1.0,
                "cpu_s_per_window": 0.1 if not state["malloc_fixed"] else -1.0,
                "peak_mem_mb": 99.0 if state["malloc_fixed"] else -1.0}

    def fake_fix():
        events.append(("fix_malloc",))
        state["malloc_fixed"] = True

    monkeypatch.setattr(bp, "measure", fake_measure)
    monkeypatch.setattr(bp, "_fix_malloc", fake_fix)
    monkeypatch.setattr(bp, "_spectral_warmup", lambda: None)
    monkeypatch.setattr(bp, "_braindecode_available", lambda: None)
    # the timing process, run in-process with the same stand-ins
    monkeypatch.setattr(bp, "_timing_rows_in_child", _in_process_child(events, tmp_path))
    return events


def _in_process_child(events, folder):
    def child(**kw):
        events.append(("child",))
        return bp.run(out=folder / "timed.json", timing_only=True, **kw)["rows"]
    return child


def test_times_come_from_the_default_allocator_and_memory_after_the_switch(recorded, tmp_path):
    out = tmp_path / "peers.json"
    result = bp.run(quick=True, out=out, only=["spatial"])
    assert recorded.index(("child",)) < recorded.index(("fix_malloc",))
    switch = recorded.index(("fix_malloc",))
    before = [e for e in recorded[:switch] if e[0] == "measure"]
    after = [e for e in recorded[switch + 1:] if e[0] == "measure"]
    assert before and all(not fixed for _, fixed, _ in before)
    assert after and all(fixed for _, fixed, _ in after)
    # the memory pass measures the same cases as the timing pass
    assert [s for *_, s in after] == [s for *_, s in before]
    measured = [r for r in result["rows"] if r["params"]]
    assert {r["model"] for r in measured} == {"megfm small (classify)",
                                              "megfm small spatial stage"}
    for row in measured:
        assert row["windows_per_s"] == 10.0 and row["cpu_s_per_window"] == 0.1
        assert row["peak_mem_mb"] == 99.0
    assert result["allocator"]["time"].startswith("glibc default")
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_timing_only_run_leaves_the_allocator_alone(recorded, tmp_path):
    result = bp.run(quick=True, out=tmp_path / "t.json", only=["spatial"], timing_only=True)
    assert ("fix_malloc",) not in recorded
    assert result["allocator"]["memory"] is None


def test_peers_without_braindecode_are_listed_not_dropped(recorded, tmp_path):
    result = bp.run(quick=True, out=tmp_path / "peers.json", only=["LUNA"])
    luna = [r for r in result["rows"] if r["model"] == "LUNA"]
    assert luna and all(r["windows_per_s"] is None for r in luna)
    assert all("braindecode not installed" in r["note"] for r in luna)
    assert result["target"]["passed"] is None


def test_spatial_stage_row_is_small_with_one_latent_and_one_block():
    name, family, build, note = next(m for m in bp.model_table(False)
                                     if m[0] == "megfm small spatial stage")
    model, _, _ = build(16, "cpu")
    config = model.backbone.config
    assert (config.n_latents, config.depth, config.dim) == (1, 1, 128)
    assert family == "megfm" and note.startswith("diagnostic")
