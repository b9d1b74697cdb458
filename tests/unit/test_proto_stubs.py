"""The committed generated code in distbuild/_proto matches proto/ (scripts/gen-proto)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    """Regenerating into a temporary directory gives exactly the committed files."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen-proto"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    committed = REPO / "distbuild" / "_proto"
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.py*")}
    stored = {p.relative_to(committed): p.read_text() for p in committed.rglob("*.py*")
              if "__pycache__" not in p.parts}
    assert sorted(fresh) == sorted(stored), "generated file set differs: run scripts/gen-proto"
    stale = [str(name) for name in fresh if fresh[name] != stored[name]]
    assert stale == [], f"stale generated code (run scripts/gen-proto): {stale}"
