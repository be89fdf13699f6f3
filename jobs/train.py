"""Entrypoint for ``ray job submit``: the same flags as ``ipo-ray run``.

    ray job submit --working-dir . -- python jobs/train.py --config configs/world-tiny.yaml
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
