"""Tools behind the ``mlspy`` command: demo, tree pictures."""
