"""The group benchmark: mlspy (and optionally mls-rs) on groups of growing size, with the
cryptographic floor of each operation. Run ``mlspy bench --help``."""
