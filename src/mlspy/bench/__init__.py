"""Benchmarks. The group benchmark (``mlspy bench``: ``main``): mlspy (and optionally mls-rs)
on groups of growing size, with the cryptographic floor of each operation. The Delivery
Service load benchmark (``mlspy bench-ds``: ``ds_load``): the DS in its own processes under an
open-loop load. Run either with ``--help``."""
