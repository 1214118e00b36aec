"""Flash (Panchal et al., ICML 2023, PMLR 202, "Flash: Concept Drift Adaptation in
Federated Learning", https://proceedings.mlr.press/v202/panchal23a.html).

One round of the paper's algorithm box:

    server: send x_t to the sampled clients
    client: for e = 1..E: one epoch of local SGD; L_e = validation loss;
            stop when L_{e-1} - L_e < γ / e  (L_0 = +inf)          -- early stopping
    server: Δ_t = weighted mean of (client weights - x_t)
            x_{t+1} = Flash(x_t, Δ_t)  (m, v, β3, d; see fedtune.server.flash)

The client rule lives in :class:`fedtune.algorithms.base.EarlyStopping`, so any
algorithm can switch it on with ``early_stop_gamma``; the server optimizer is
:class:`fedtune.server.flash.Flash`.
"""

from __future__ import annotations

from pydantic import Field

from fedtune.algorithms.base import ALGORITHMS, Algorithm, ClientResult, LocalParams
from fedtune.errors import ConfigError
from fedtune.server.base import ServerOptimizer
from fedtune.server.flash import Flash


class FlashParams(LocalParams):
    """:class:`LocalParams` with Flash's defaults: up to 5 epochs, early stopping on."""

    local_epochs: int = Field(5, ge=1, description="most local epochs per round (early stopping may end sooner)")
    early_stop_gamma: float | None = Field(0.01, ge=0, description="stop after epoch e when validation loss fell by < γ/e")


@ALGORITHMS.register("flash")
class FlashAlgorithm(Algorithm):
    """Early-stopping clients + the Flash server optimizer.

    Parameters
    ----------
    params : FlashParams
        Local training settings; ``early_stop_gamma`` (default 0.01) is γ and
        ``local_epochs`` (default 5) the most epochs a client runs.
    server_optimizer : Flash | None, default None
        The server optimizer; ``None`` builds ``Flash()`` with its defaults. Any other
        optimizer is refused (``[server] name = "flash"`` in an experiment file).
    """

    name = "flash"
    Params = FlashParams

    server_optimizers = ("flash",)

    def __init__(self, params: FlashParams, server_optimizer: ServerOptimizer | None = None) -> None:
        server_optimizer = Flash() if server_optimizer is None else server_optimizer
        if not isinstance(server_optimizer, Flash):
            raise ConfigError(
                f'server.name: algorithm "flash" needs the Flash server optimizer; set [server] name = "flash" '
                f"(got {type(server_optimizer).__name__})"
            )
        super().__init__(params, server_optimizer)

    def round_metrics(self, results: list[ClientResult]) -> dict[str, float]:
        """The server optimizer's metrics plus the mean local epochs the clients ran."""
        out = dict(self.server_optimizer.round_metrics())
        if results:
            out["epochs_mean"] = sum(float(r.metrics.get("epochs", 0)) for r in results) / len(results)
        return out
