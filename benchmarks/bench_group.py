"""The group benchmark (same as ``mlspy bench``): mlspy, optionally mls-rs, and the crypto floor
for groups of 2 to 4,096 members. ``--help`` lists the options; for example::

    .venv/bin/python benchmarks/bench_group.py --compare mls-rs --json bench.json --plot bench.png
"""

from __future__ import annotations

import sys

from mlspy.bench.main import main

if __name__ == "__main__":
    sys.exit(main())
