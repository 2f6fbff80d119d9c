"""AE vs VAE vs AAE with one budget: the same as ``synthgen evaluate --compare`` (its flags pass through).

Trains the three kinds from the same AAEConfig (only ``kind`` differs) on the same data with the same seed
and number of steps, evaluates each checkpoint with the metrics of ``aae/metrics.py``, and writes
``compare.md``, ``compare.json`` and side-by-side grids to ``bench/results/compare/`` (``--out``).
The default budget (10,000 avatars at 64px, 3 epochs each) takes about 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys

from synthgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", "--compare", *sys.argv[1:]]))
