"""The README's test command is what CI runs, and its slow step has tests to run
(pytest exits 5 when a marker selects none, which fails CI)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text[text.index("**Run the tests**"):]
    block = block[block.index("```sh") + 5:block.index("```", block.index("```sh") + 5)]
    return [c.strip() for line in block.splitlines() for c in line.split("&&")
            if c.strip().startswith("python -m pytest")]


def test_ci_runs_the_readme_test_commands():
    commands = _readme_commands()
    text = (ROOT / "README.md").read_text()
    commands += [c for c in re.findall(r"`(python -m pytest [^`]*)`", text) if "-m slow" in c]
    assert len(commands) == 2 and any("-m slow" in c for c in commands), commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for c in commands:
        assert c in ci, f"{c!r} is not a line of .ci/run"
    assert all("-n auto" in c for c in commands)


@pytest.mark.slow
def test_slow_step_collects_tests():
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow",
                          "-p", "no:cacheprovider", str(ROOT / "tests")], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert len(ids) >= 5 and any("test_tuning.py" in i for i in ids), out.stdout[-2000:]
    assert re.search(r"\d+/\d+ tests collected \(\d+ deselected\)", out.stdout), out.stdout[-500:]
