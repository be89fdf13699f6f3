"""Render a run report in headless Chromium and save a PNG screenshot, to look at it.

    python scripts/screenshot_report.py runs/world-tiny/report.html --out report.png

Needs Chromium (Debian: ``apt-get install chromium``). The flags keep it off the network: the
report is self-contained (inline SVG and GIF data URIs), so nothing needs fetching.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 2400, timeout: float = 120) -> Path:
    exe = find_chromium()
    if exe is None:
        raise SystemExit("no Chromium found: install it (Debian: apt-get install chromium)")
    if not report.is_file():
        raise SystemExit(f"report: {report} does not exist")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out.resolve()}", report.resolve().as_uri()]
        subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)
    if not out.is_file() or out.stat().st_size == 0:
        raise SystemExit(f"Chromium wrote no screenshot to {out}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=Path("report.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    a = ap.parse_args(argv)
    print(screenshot(a.report, a.out, a.width, a.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
