"""The README's example runs as pasted: its first ```python block, needing only diffusionblocks.py
and torch.

Run: python -m pytest -q test_readme.py      (about 15 seconds on a 2-core CPU)
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def readme_example():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)


def test_readme_example_runs_as_pasted_and_learns(tmp_path):
    # A folder holding only a copy of diffusionblocks.py, as in a user's project; `python -c` puts
    # the working directory first on sys.path. One thread, as the other tests' subprocesses run.
    shutil.copy(os.path.join(HERE, "diffusionblocks.py"), tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", result.stdout).group(1))
    # Three classes, so chance is 1/3: the example's untrained blocks read out 0.347. Trained, it
    # printed 0.988 here (0.982-0.994 over seeds 0, 1, 2, 5 of the same recipe), so 0.9 is far above
    # chance yet leaves room for another platform's floating point.
    assert accuracy > 0.9, result.stdout
