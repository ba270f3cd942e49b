"""The Delivery Service load benchmark (same as ``mlspy bench-ds``): the DS in its own
process(es), open-loop senders and WebSocket receivers in generator processes, one table row
per rate. ``--help`` lists the options; for example::

    .venv/bin/python benchmarks/ds_load.py --rates 50,100,200,400 --duration 10
    .venv/bin/python benchmarks/ds_load.py --groups 1 --group-size 1000 --rates 1,2,5
    .venv/bin/python benchmarks/ds_load.py --groups 1 --group-size 1000 --rates 10 --commit-every 10
    .venv/bin/python benchmarks/ds_load.py --kill --rates 100 --duration 10

Exit status 1 if any message the DS acknowledged did not reach every receiver of its group.
"""

from __future__ import annotations

import sys

from mlspy.bench.ds_load import main

if __name__ == "__main__":
    sys.exit(main())
