"""Flower: records round-trip exactly, runs through Flower's runtime equal in-process runs,
the generated app project is one `flwr run` accepts, and what cannot apply is one line."""

from __future__ import annotations

import tomllib

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402

from fedtune.algorithms import ClientResult, ClientTask  # noqa: E402
from fedtune.cli import app  # noqa: E402
from fedtune.deploy import records  # noqa: E402
from fedtune.deploy.client_app import node_partitions, parse_partitions  # noqa: E402
from fedtune.deploy.project import write_project  # noqa: E402
from fedtune.engine import run_experiment  # noqa: E402
from fedtune.engine.worker import ClientFailure, ClientRun  # noqa: E402
from fedtune.errors import ConfigError  # noqa: E402


def without_times(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in metrics]


# -- records -----------------------------------------------------------------------------
def test_tensors_cross_byte_for_byte_in_every_dtype():
    state = {
        "w": torch.randn(3, 4),
        "b16": torch.randn(5, dtype=torch.float64).to(torch.bfloat16),
        "h": torch.randn(2, 2).half(),
        "i": torch.arange(6).reshape(2, 3),
        "scalar": torch.tensor(0.5),
    }
    back = records.record_to_state(records.state_to_record(state))
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor), name


@pytest.mark.parametrize("names", [None, (), ("a.weight", "b.bias")])
def test_a_task_crosses_as_a_config_record(names):
    task = ClientTask(client_id=7, round=3, seed=11, tensor_names=names)
    assert records.record_to_task(records.task_to_record(task)) == task


def test_a_task_with_a_guide_crosses_with_its_tensors():
    guide = {"a.weight": torch.randn(3, 2), "b.bias": torch.randn(2)}
    task = ClientTask(client_id=7, round=3, seed=11, guide=guide)  # FwdLLM sends the previous global update
    back = records.records_to_task(RecordDict(records.task_to_records(task)))
    assert back == task and back.guide is not None and set(back.guide) == set(guide)
    assert all(torch.equal(back.guide[k], guide[k]) for k in guide)
    assert records.records_to_task(RecordDict(records.task_to_records(ClientTask(1, 1, 0)))).guide is None


def test_a_result_with_jvps_metrics_and_state_crosses_exactly():
    jvps = [[0.1234567890123, -2.5], [3e-7, 1.0], []]
    result = ClientResult(4, 37, {"w": torch.randn(2, 3)}, {"loss": 0.75, "steps": 12, "nan": float("nan")}, 96, jvps=jvps)
    state = {"visits": 3, "name": "x", "last": torch.ones(2)}
    run = records.content_to_run(records.run_to_content(ClientRun(result, state, 1.5)))
    got = run.outcome
    assert isinstance(got, ClientResult)
    assert (got.client_id, got.num_examples, got.bytes_up, got.jvps) == (4, 37, 96, jvps)
    assert got.metrics["steps"] == 12 and type(got.metrics["steps"]) is int  # ints stay ints in the metrics file
    assert got.metrics["loss"] == 0.75 and got.metrics["nan"] != got.metrics["nan"]
    assert torch.equal(got.tensors["w"], result.tensors["w"])
    assert run.state["visits"] == 3 and run.state["name"] == "x" and torch.equal(run.state["last"], torch.ones(2))
    assert run.seconds == 1.5
    plain = records.content_to_run(records.run_to_content(ClientRun(ClientResult(1, 2, {}, {}), None, 0.0)))
    assert plain.outcome.jvps is None and plain.state is None


def test_a_failure_crosses_as_a_failure():
    run = records.content_to_run(records.run_to_content(ClientRun(ClientFailure(5, 2, "ValueError: boom (x.py:1)"), None, 0.25)))
    assert run.outcome == ClientFailure(5, 2, "ValueError: boom (x.py:1)") and run.state is None


def test_a_metric_flower_cannot_carry_is_one_line():
    with pytest.raises(TypeError, match="client metric 'tag' is a str"):
        records.run_to_content(ClientRun(ClientResult(1, 2, {}, {"tag": "x"}), None, 0.0))


# -- partitions from node config -----------------------------------------------------------
def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=2, node_config=node_config, state=RecordDict(), run_config={})


def test_a_node_names_its_partitions_in_its_node_config():
    assert parse_partitions("0-3, 9,12-13") == [0, 1, 2, 3, 9, 12, 13]
    assert node_partitions(_context({"partition-id": 4, "num-partitions": 10})) == [4]
    assert node_partitions(_context({"partition-ids": "2-3"})) == [2, 3]
    with pytest.raises(ValueError, match="partition-id=N"):
        node_partitions(_context({}))
    with pytest.raises(ValueError, match="partition-ids"):
        parse_partitions("a-b")


def test_a_client_app_refuses_a_partition_its_node_does_not_hold(make_experiment):
    from fedtune.deploy.client_app import partitions_content, train_content

    exp = make_experiment()
    task = ClientTask(client_id=5, round=1, seed=3)
    content = RecordDict({records.TASK: records.task_to_record(task), records.GLOBAL: records.state_to_record({})})
    run = records.content_to_run(train_content(lambda ctx: exp, content, _context({"partition-id": 1})))
    assert isinstance(run.outcome, ClientFailure) and "holds partitions [1], not 5" in run.outcome.error
    assert list(partitions_content(_context({"partition-ids": "0-2"}))[records.PARTITIONS]["ids"]) == [0, 1, 2]


# -- the grid backend, on a grid that answers in-process ---------------------------------------
@pytest.fixture
def task_identity():
    """What Flower's runtime sets before messages are made (outside one, tests set it)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class FakeGrid:
    """Nodes by id with their node config; replies come from the ClientApp's own handlers.

    ``broken``: nodes that answer training with a Flower error; ``silent``: nodes that never answer it.
    """

    def __init__(self, exp, nodes: dict[int, dict], broken=(), silent=()):
        self.exp, self.nodes, self.broken, self.silent = exp, nodes, set(broken), set(silent)
        self.replies: dict[str, object] = {}
        self.sent: list[int] = []  # destinations of train messages
        self.count = 0

    def get_node_ids(self):
        return list(self.nodes)

    def _reply(self, message):
        from flwr.app import Error, Message

        from fedtune.deploy.client_app import partitions_content, train_content

        node = message.metadata.dst_node_id
        context = _context(self.nodes[node])
        if message.metadata.message_type == "query":
            reply = Message(partitions_content(context), reply_to=message)
        elif node in self.broken:
            reply = Message(Error(code=3, reason="ClientApp crashed"), reply_to=message)
        else:
            reply = Message(train_content(lambda ctx: self.exp, message.content, context), reply_to=message)
        reply.metadata.__dict__["_src_node_id"] = node
        return reply

    def push_messages(self, messages):
        ids = []
        for message in messages:
            self.count += 1
            message.metadata.__dict__["_message_id"] = mid = f"m{self.count}"
            if message.metadata.message_type == "train":
                self.sent.append(message.metadata.dst_node_id)
            if message.metadata.dst_node_id not in self.silent or message.metadata.message_type == "query":
                self.replies[mid] = self._reply(message)
            ids.append(mid)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(mid) for mid in list(ids) if mid in self.replies]

    def send_and_receive(self, messages, timeout=None):
        return self.pull_messages(self.push_messages(messages))


def test_tasks_go_to_the_node_holding_their_partition_and_problems_are_failed_clients(make_experiment, task_identity):
    from fedtune.deploy.grid_backend import GridBackend
    from fedtune.engine.worker import ClientWorker
    from fedtune.models.base import get_trainable

    exp = make_experiment()
    nodes = {101: {"partition-ids": "0-2"}, 102: {"partition-id": 3}, 103: {"partition-id": 4}, 104: {"partition-id": 5}}
    grid = FakeGrid(exp, nodes, broken={103}, silent={104})
    backend = GridBackend(grid, num_partitions=8, wait_nodes_s=0, round_timeout_s=0.5)
    assert backend.node_of == {0: 101, 1: 101, 2: 101, 3: 102, 4: 103, 5: 104}  # 6 and 7: no node
    worker = ClientWorker.from_experiment(exp)
    global_state = get_trainable(worker.model)
    tasks = [ClientTask(cid, 1, exp.seed) for cid in (2, 3, 4, 5, 6)]
    runs = backend.run(tasks, global_state, {})
    assert grid.sent == [101, 102, 103, 104]  # partition 6 has no node: no message
    assert [type(r.outcome).__name__ for r in runs] == ["ClientResult", "ClientResult", "ClientFailure", "ClientFailure", "ClientFailure"]
    assert "Flower error 3: ClientApp crashed" in runs[2].outcome.error
    assert "no reply within 0.5 s" in runs[3].outcome.error
    assert "no SuperNode holds partition 6" in runs[4].outcome.error
    expected = worker.run(tasks[0], global_state).outcome  # the same client in-process
    assert runs[0].outcome.metrics == expected.metrics
    assert all(torch.equal(runs[0].outcome.tensors[k], expected.tensors[k]) for k in expected.tensors)


def test_no_node_at_all_is_one_line(make_experiment, task_identity):
    from fedtune.deploy.grid_backend import GridBackend
    from fedtune.errors import RunError

    with pytest.raises(RunError, match="no Flower SuperNode holding a partition"):
        GridBackend(FakeGrid(make_experiment(), {7: {"partition-id": 99}}), num_partitions=8, wait_nodes_s=0)


def test_the_server_app_runs_the_bundled_experiment_where_its_run_config_says(make_experiment, tmp_path, task_identity):
    from fedtune.deploy.project import BundledExperiment
    from fedtune.deploy.server_app import serve_experiment

    app_dir = tmp_path / "app"
    write_project(make_experiment(rounds=2), app_dir)
    load = BundledExperiment(app_dir)
    out = tmp_path / "on-the-superlink"
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"experiment": "experiment.toml", "output": str(out), "wait-nodes-s": 0, "round-timeout-s": 0})
    grid = FakeGrid(load(context), {100 + i: {"partition-id": i} for i in range(8)})
    result = serve_experiment(grid, context, load)
    local = run_experiment(make_experiment(rounds=2, output=str(tmp_path / "local")), report=False)
    assert result.run_dir == out and (out / "metrics.jsonl").is_file() and (out / "report.md").is_file()
    assert without_times(result.metrics) == without_times(local.metrics)
    with pytest.raises(ConfigError, match="already holds a run"):  # as fedtune run: no silent overwrite
        serve_experiment(grid, context, load)


def test_flower_missing_is_one_line(monkeypatch):
    import sys

    from fedtune.deploy.backend import require_flower

    monkeypatch.setitem(sys.modules, "flwr", None)  # import flwr raises ImportError
    with pytest.raises(ConfigError, match=r'needs Flower; install it with pip install "fedtune\[flower\]"'):
        require_flower()


# -- runs through Flower's runtime equal in-process runs ---------------------------------------
SPRY = {"name": "spry", "batch_size": 16, "lr": 1e-3, "max_steps": 5}
CASES = {
    "fedavg": {},
    "spry-per-epoch": {"algorithm": SPRY, "server": {"name": "fedyogi", "lr": 0.01}},
    "spry-per-iteration": {"algorithm": {**SPRY, "communication": "per_iteration"}, "server": {"name": "fedyogi", "lr": 0.01}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_runs_through_the_grid_backend_equal_inprocess(make_experiment, tmp_path, task_identity, case):
    """The whole path but Flower's transport: records, partition routing, the ClientApp's handlers."""
    from fedtune.deploy.backend import Serving, serving

    common = {"rounds": 3, "checkpoint.every": 0, **CASES[case]}
    local = run_experiment(make_experiment(output=str(tmp_path / "local"), **common), report=False)
    exp = make_experiment(output=str(tmp_path / "grid"), backend="flower", **common)
    grid = FakeGrid(exp, {100 + i: {"partition-id": i} for i in range(8)})
    with serving(Serving(grid, wait_nodes_s=0, round_timeout_s=5)):
        through = run_experiment(exp, report=False)
    assert without_times(through.metrics) == without_times(local.metrics)
    assert sorted(grid.sent) == sorted(100 + cid for m in local.metrics for cid in m["sampled"])  # one message per task


# one case on Flower's runtime: starting Ray and importing torch in its actors costs 20-60 s a
# run on a busy 2-core machine, and almost all of it is start-up (a round takes 0.2 s), so
# the run is as small as what it checks allows: two rounds (the second reuses the actors
# and carries the server optimizer's state), four virtual SuperNodes, and data generated
# in the actors (synthetic: no scikit-learn to import there), on one Ray actor. Spry per-iteration sends the
# most kinds of record (tensor names in tasks, jvps and metrics up). All three cases on a
# real SuperLink with two SuperNodes: test_flower_deployment.py (opt-in, minutes).
SIMULATED = {"rounds": 2, "checkpoint.every": 0, "data": {"name": "synthetic", "partition": "natural", "num_clients": 4,
                                                          "options": {"num_users": 4, "max_examples_per_user": 60}}}


@pytest.mark.parametrize("case", ["spry-per-iteration"])
def test_flower_simulation_equals_inprocess(make_experiment, tmp_path, monkeypatch, case):
    """Flower's own runtime: an in-memory SuperLink, 4 virtual SuperNodes, ClientApps on a Ray actor."""
    monkeypatch.setattr("os.cpu_count", lambda: 1)  # one actor (it imports torch once, not twice on 2 cores)
    common = {**SIMULATED, **CASES[case]}
    local = run_experiment(make_experiment(output=str(tmp_path / "local"), **common), report=False)
    flower = run_experiment(make_experiment(output=str(tmp_path / "flower"), backend="flower", **common), report=False)
    assert without_times(flower.metrics) == without_times(local.metrics)
    assert [len(m["sampled"]) for m in flower.metrics] == [4, 4] and all(m["failures"] == [] for m in flower.metrics)
    assert (tmp_path / "flower" / "metrics.jsonl").read_text().count("\n") == 2
    if case == "spry-per-iteration":  # the jvps crossed: nothing but scalars went up
        assert all(m["bytes_up"] < 1000 for m in flower.metrics)


# -- the Flower app project ----------------------------------------------------------------
def test_the_app_project_is_a_valid_flower_app(make_experiment, tmp_path):
    from flwr.common.config import validate_config

    out = tmp_path / "app"
    files = write_project(make_experiment(), out)
    assert sorted(p.name for p in files) == ["experiment.toml", "fedtune_app.py", "pyproject.toml"]
    config = tomllib.loads((out / "pyproject.toml").read_text())
    valid, errors, _ = validate_config(config, check_module=True, project_dir=out)
    assert valid, errors
    assert config["tool"]["flwr"]["app"]["config"]["experiment"] == "experiment.toml"
    assert tomllib.loads((out / "experiment.toml").read_text())["backend"]["name"] == "flower"
    from fedtune.deploy.project import BundledExperiment

    exp = BundledExperiment(out)(_context({}))
    assert exp.backend.name == "flower" and exp.data.num_clients == 8


def test_flower_app_command_writes_the_project_and_refuses_what_cannot_apply(tmp_path):
    runner = CliRunner()
    exp = tmp_path / "exp.toml"
    exp.write_text('name = "tiny"\nrounds = 2\nclients_per_round = 2\n[data]\nname = "digits"\nnum_clients = 4\n')
    ok = runner.invoke(app, ["flower", "app", str(exp), "--out", str(tmp_path / "app")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "app" / "pyproject.toml").is_file()
    again = runner.invoke(app, ["flower", "app", str(exp), "--out", str(tmp_path / "app")])
    assert again.exit_code == 2 and "not empty" in again.output and len(again.output.strip().splitlines()) == 1
    ray = runner.invoke(app, ["flower", "app", str(exp), "--out", str(tmp_path / "b"), "--set", 'backend="ray"'])
    assert ray.exit_code == 2 and "does not apply to a Flower app" in ray.output
    missing = runner.invoke(app, ["flower", "app", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "c")])
    assert missing.exit_code == 2 and "no such experiment file" in missing.output


def test_write_project_refuses_a_ray_experiment(make_experiment, tmp_path):
    with pytest.raises(ConfigError, match="does not apply"):
        write_project(make_experiment(backend="ray"), tmp_path / "x")
