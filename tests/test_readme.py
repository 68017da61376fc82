"""The README's quickstart runs exactly as pasted (in a temporary folder)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_is_short():
    code_lines = [ln for ln in _quickstart().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(code_lines) <= 15


def test_quickstart_runs_as_pasted(tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(_quickstart())
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # the study wrote its report and the alignment scores were printed per task state
    assert (tmp_path / "report" / "report.json").exists()
    assert (tmp_path / "report" / "roc.png").exists()
    last = result.stdout.strip().splitlines()[-1]
    assert "auditory" in last and "somatosensory" in last
