"""Figure 3: linear top-1 against the BN batch, BYOL vs Momentum² Teacher (the command line).

The data and the drawing are library code, ``repro/results/figures.py``; this script only
runs it (the package must be installed: ``make`` installs it).

    python figures/fig3_bn_batch.py [--results tables/out] [--out figures/out]
"""

import sys

from repro.results.figures import main

if __name__ == "__main__":
    sys.exit(main())
