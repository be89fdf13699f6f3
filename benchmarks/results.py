"""Keep benchmarks/RESULTS.md as named sections, each rewritten by the script that measures it."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script named in it, on this project's CPU machine (2 cores) unless it says otherwise.\n"


def update_section(title: str, body: str, path: Path = RESULTS) -> None:
    text = path.read_text() if path.is_file() else HEADER
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)


def read_section(title: str, path: Path = RESULTS) -> str | None:
    """The body of section ``title`` as written, or None when there is none."""
    text = path.read_text() if path.is_file() else ""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1).strip() if m else None
