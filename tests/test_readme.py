"""README.md tells the truth: its Python examples run as written, in order."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write files (items.csv) where they run
    # Blocks inside a list item are indented with it.
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)^ *```", README.read_text(), flags=re.S | re.M)]
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    decisions = namespace["decisions"]
    assert {"auto_accept", "expert"} <= set(decisions["route"])
    assert decisions["reason"].str.contains("guideline v3 §2").any()
    # "Your own data" writes the table configs/own.yaml reads, as its comment says.
    from experiments.config import load_config
    from experiments.table import load_table

    own = README.parent / "configs/own.yaml"
    assert f"```yaml\n{own.read_text()}```" in README.read_text(), "the README shows configs/own.yaml in full"
    cfg = load_config(own, ignore=("compare", "tune"))
    table = load_table(cfg.table)
    assert len(table.labels) == 569 and len(table.known_gold) == 398
    assert table.classes == ("benign", "malignant") and table.features.shape[1] == 30
