"""Docs are code: every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in order in one fresh interpreter (later blocks may use earlier ones'
names), in an empty temporary folder (files a block writes land there). A block that must not run
(e.g. it needs a licensed dataset) is fenced ```python no-run and says why beside it.
"""

import subprocess
import sys

import pytest
from fixtures import REPO
from fixtures.docs import python_blocks

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_block_parser_finds_blocks_and_skips_no_run():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python no-run\nboom()\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a\n"]


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p.read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[p.name for p in PAGES_WITH_CODE])
def test_python_blocks_run(page, tmp_path):
    blocks = python_blocks(page.read_text())
    script = "\n".join(f"# --- block {i + 1}\n{code}" for i, code in enumerate(blocks))
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg"}
    import os

    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env={**os.environ, **env})
    assert res.returncode == 0, f"{page.name}: a Python block failed\n{res.stderr[-3000:]}"
