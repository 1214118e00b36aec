"""fedtune: federated finetuning research and deployment.

Spry (forward-mode AD finetuning), Flash (drift-aware server optimization) and the
baselines they are measured against.
"""

__version__ = "0.1.0"
