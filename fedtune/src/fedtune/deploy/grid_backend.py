"""A backend that runs a round's client tasks on Flower SuperNodes, through a ``Grid``.

The engine keeps everything that makes a run a fedtune run: the seeded sampling,
``configure_round``, ``aggregate``, evaluation, checkpoints and the metrics file. This
backend only carries each task to the node that holds the task's client partition and
brings the outcome back, as Flower messages (flwr 1.42 Message API):

1. on start, a ``query`` message to every node asks which partitions it holds
   (:mod:`fedtune.deploy.client_app`); nodes that join later are asked before a round;
2. per round, one ``train`` message per task, addressed to its partition's node, carrying
   the task, the global trainables and (stateful methods) the client's state;
3. each reply becomes a :class:`~fedtune.engine.worker.ClientRun`; a node that holds no
   sampled partition, an error reply (a ClientApp that crashed, a node that went away)
   or a reply that does not come within the round timeout is a failed client, and the
   round goes on by the experiment's failure policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedtune.algorithms import ClientState, ClientTask
from fedtune.deploy import records
from fedtune.engine.backend import Backend
from fedtune.engine.worker import ClientFailure, ClientRun
from fedtune.errors import RunError
from fedtune.models.base import State

POLL_S = 0.05  # between pulls of replies; Flower's own grids poll every 0.1 s
QUERY_TIMEOUT_S = 30.0  # a node that does not say which partitions it holds is asked again later


class GridBackend(Backend):
    """Client tasks as Flower messages to the SuperNodes that hold their partitions.

    Args:
        grid: the ``Grid`` a ``ServerApp`` is given.
        num_partitions: the experiment's clients (partitions ``0 .. num_partitions - 1``).
        wait_nodes_s: how long to wait at start for nodes covering every partition;
            past it the run starts and a task for an uncovered partition fails.
        round_timeout_s: how long a round waits for replies (None: no limit).
        device: where received tensors are placed (the server's device).
        alive: False once the runtime behind the grid has stopped (a round then fails at once).
    """

    def __init__(
        self,
        grid: Grid,
        num_partitions: int,
        wait_nodes_s: float = 60.0,
        round_timeout_s: float | None = None,
        device="cpu",
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.grid = grid
        self.alive = alive
        self.num_partitions = num_partitions
        self.round_timeout_s = round_timeout_s
        self.device = device
        self.node_of: dict[int, int] = {}  # partition -> node id
        self._asked: set[int] = set()
        deadline = time.monotonic() + wait_nodes_s
        while True:
            self.discover()
            if len(self.node_of) >= num_partitions or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not self.node_of:
            raise RunError(f"no Flower SuperNode holding a partition of this experiment joined within {wait_nodes_s:g} s")

    def discover(self) -> None:
        """Ask nodes not asked yet which partitions they hold."""
        new = [node for node in self.grid.get_node_ids() if node not in self._asked]
        if not new:
            return
        messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in new]
        for reply in self.grid.send_and_receive(messages, timeout=QUERY_TIMEOUT_S):
            node = reply.metadata.src_node_id
            self._asked.add(node)
            if reply.has_error():
                continue  # a node that cannot say: asked again with the next node that joins
            for pid in reply.content[records.PARTITIONS]["ids"]:
                if 0 <= int(pid) < self.num_partitions:
                    self.node_of.setdefault(int(pid), node)

    def run(self, tasks: list[ClientTask], global_state: State, states: dict[int, ClientState | None]) -> list[ClientRun]:
        if len(self.node_of) < self.num_partitions:
            self.discover()
        arrays = records.state_to_record(global_state)  # one record per round, shared by the messages
        runs: list[ClientRun | None] = [None] * len(tasks)
        pending: dict[str, int] = {}
        for index, task in enumerate(tasks):
            node = self.node_of.get(task.client_id)
            if node is None:
                runs[index] = _failed(task, f"no SuperNode holds partition {task.client_id}")
                continue
            content = RecordDict({**records.task_to_records(task), records.GLOBAL: arrays})
            for key, record in records.state_to_records(states.get(task.client_id)).items():
                content[key] = record
            message = Message(content, dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(task.round))
            ids = list(self.grid.push_messages([message]))
            if ids:
                pending[ids[0]] = index
            else:
                runs[index] = _failed(task, f"the SuperLink did not accept the message to node {node}")
        deadline = None if self.round_timeout_s is None else time.monotonic() + self.round_timeout_s
        while pending and (deadline is None or time.monotonic() < deadline):
            if not self.alive():
                raise RunError(f"round {tasks[0].round}: the Flower runtime stopped while clients were training")
            for reply in self.grid.pull_messages(list(pending)):
                index = pending.pop(reply.metadata.reply_to_message_id, None)
                if index is None:
                    continue
                if reply.has_error():
                    runs[index] = _failed(tasks[index], f"Flower error {reply.error.code}: {reply.error.reason}")
                else:
                    runs[index] = records.content_to_run(reply.content, self.device)
            if pending:
                time.sleep(POLL_S)
        for index in pending.values():
            runs[index] = _failed(tasks[index], f"no reply within {self.round_timeout_s:g} s")
        return runs  # type: ignore[return-value]


def _failed(task: ClientTask, why: str) -> ClientRun:
    return ClientRun(ClientFailure(task.client_id, task.round, why), None, 0.0)
