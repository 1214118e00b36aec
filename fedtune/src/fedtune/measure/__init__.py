"""Measurement: memory of client steps (``memory``) and the ``fedtune bench`` commands (``cli``)."""
