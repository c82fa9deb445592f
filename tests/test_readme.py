"""README's Python snippets run as written (from a temporary working folder)."""

import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_snippets_run(tmp_path):
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert snippets, "README has no python snippet"
    shutil.copytree(ROOT / "src" / "transmem" / "configs", tmp_path / "configs")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for snippet in snippets:
            exec(compile(snippet, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "runs" / "readme_example" / "model.safetensors").exists()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_short_with_installation_near_the_top():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert "## Installation" in lines[:60]
