"""The conformance suite: one module per check family; run with ``pytest --pyargs conformance``."""
