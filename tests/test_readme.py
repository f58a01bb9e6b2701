"""README.md tells the truth: its Python examples run as written, in order."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    decisions = namespace["decisions"]
    assert {"auto_accept", "expert"} <= set(decisions["route"])
    assert decisions["reason"].str.contains("guideline v3 §2").any()
