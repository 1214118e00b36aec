"""The federation as the clients see it: each client's data in a given round.

Loading is deterministic in the experiment (dataset, partition, seed), so every process
that builds a :class:`Federation` from the same experiment (the server, each Ray actor)
holds the same clients; a drift schedule, when configured, applies here by round.
"""

from __future__ import annotations

from fedtune.config import Experiment
from fedtune.data import FederatedDataset, load_federated
from fedtune.data.base import ClientData, Examples


class Federation:
    """A partitioned dataset plus the experiment's drift schedule."""

    def __init__(self, exp: Experiment, fed: FederatedDataset | None = None) -> None:
        self.fed = fed or load_federated(exp.data, exp.seed)
        self.drift = None
        if exp.drift is not None:
            from fedtune.data.drift import DriftSimulator

            self.drift = DriftSimulator.from_config(exp.drift, self.fed.info, exp.seed)

    @property
    def info(self):
        return self.fed.info

    @property
    def num_clients(self) -> int:
        return self.fed.num_clients

    def client_data(self, client_id: int, round: int) -> ClientData:
        """Client ``client_id``'s train / validation / test splits as they are in ``round``."""
        data = self.fed.clients[client_id]
        return data if self.drift is None else self.drift.apply(client_id, round, data)

    def test_examples(self, round: int) -> Examples:
        """The pooled held-out examples of all clients in ``round`` (the generalized figure)."""
        if self.drift is None:
            return self.fed.pooled("test")
        return Examples.concat([self.drift.apply_examples(cid, round, c.test) for cid, c in enumerate(self.fed.clients)])
