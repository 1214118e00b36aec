"""Backends and client state: Ray equals in-process, killed actors, stateful clients, resume."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from fedtune.algorithms import ALGORITHMS, Algorithm, Client
from fedtune.engine import resume_experiment, run_experiment

ray = pytest.importorskip("ray")

_DRIVER_PID = os.getpid()  # pickled by value into the actors: tells a Ray worker from pytest


def without_times(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in metrics]


# -- two test algorithms, shipped to the actors by value -------------------------------------
class VisitCountingClient(Client):
    """A stateful client: counts its own rounds and reports the count."""

    stateful = True

    def fit(self, model, global_state, data, task, state=None):
        result, _ = super().fit(model, global_state, data, task)
        visits = 1 if state is None else state["visits"] + 1
        result.metrics["visits"] = float(visits)
        first = next(iter(result.tensors))
        return result, {"visits": visits, "last": result.tensors[first].clone()}


@ALGORITHMS.register("test-visits")
class VisitCounting(Algorithm):
    name = "test-visits"
    Client = VisitCountingClient


class DyingClient(Client):
    """Client 3 dies in round 2: its Ray worker process is killed; in-process it raises."""

    def fit(self, model, global_state, data, task, state=None):
        if (task.round, task.client_id) == (2, 3):
            if os.getpid() != _DRIVER_PID:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("client 3 died")
        return super().fit(model, global_state, data, task, state)


@ALGORITHMS.register("test-dying")
class Dying(Algorithm):
    name = "test-dying"
    Client = DyingClient


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's own cloudpickle


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting Ray takes seconds); backends leave it running."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


RAY = {"name": "ray", "num_actors": 2}

CASES = {
    "fedavg": {},
    "fedyogi": {"server": {"name": "fedyogi", "lr": 0.03}},
    "spry-per-epoch": {"algorithm": {"name": "spry", "batch_size": 16, "lr": 1e-3, "max_steps": 5}, "server": {"name": "fedyogi", "lr": 0.01}},
    "spry-per-iteration": {
        "algorithm": {"name": "spry", "batch_size": 16, "lr": 1e-3, "max_steps": 5, "communication": "per_iteration"},
        "server": {"name": "fedyogi", "lr": 0.01},
    },
    "flash": {"algorithm": {"name": "flash", "local_epochs": 3, "batch_size": 16, "lr": 0.3}, "server": {"name": "flash", "lr": 0.05}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_ray_equals_inprocess(make_experiment, local_ray, tmp_path, case):
    local = run_experiment(make_experiment(rounds=3, output=str(tmp_path / "local"), **CASES[case]), report=False)
    remote = run_experiment(make_experiment(rounds=3, backend=RAY, output=str(tmp_path / "ray"), **CASES[case]), report=False)
    assert without_times(remote.metrics) == without_times(local.metrics)
    if not case.startswith("spry"):  # forward gradients need many more steps than 3 rounds
        assert remote.metrics[-1]["test_accuracy"] > 0.3  # digits: chance is 0.1


def test_killed_actor_is_a_failed_client_and_the_round_goes_on(make_experiment, local_ray, tmp_path):
    common = {"rounds": 3, "clients_per_round": 8, "algorithm": {"name": "test-dying", "batch_size": 16, "lr": 0.3}}
    local = run_experiment(make_experiment(output=str(tmp_path / "local"), **common), report=False).metrics
    remote = run_experiment(make_experiment(output=str(tmp_path / "ray"), backend=RAY, **common), report=False).metrics
    failures = [m["failures"] for m in remote]
    assert failures[0] == [] and failures[2] == []
    assert [f["client"] for f in failures[1]] == [3] and "Ray actor died" in failures[1][0]["error"]
    assert "client 3 died" in local[1]["failures"][0]["error"]
    strip = lambda ms: [{k: v for k, v in m.items() if k != "failures"} for m in without_times(ms)]  # noqa: E731
    assert strip(remote) == strip(local)  # the replacement actor carries on exactly


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_client_states_follow_each_client_and_survive_resume(make_experiment, tmp_path, store):
    common = {"rounds": 6, "clients_per_round": 3, "client_state": store, "checkpoint": {"every": 2},
              "algorithm": {"name": "test-visits", "batch_size": 16, "lr": 0.3}}
    full = run_experiment(make_experiment(name="full", output=str(tmp_path / "full"), **common), report=False).metrics
    seen: dict[str, int] = {}
    for m in full:
        for cid in map(str, m["sampled"]):
            seen[cid] = seen.get(cid, 0) + 1
            assert m["client_visits"][cid] == seen[cid]

    class Stop(Exception):
        pass

    def crash_after_round_5(rnd, record):
        if rnd == 5:
            raise Stop

    cut = make_experiment(name="cut", output=str(tmp_path / "cut"), **common)
    with pytest.raises(Stop):
        run_experiment(cut, progress=crash_after_round_5)  # states of round 5 written, checkpoint at 4
    resumed = resume_experiment(tmp_path / "cut")
    assert without_times(resumed.metrics) == without_times(full)
    if store == "disk":  # one version per client, the newest
        assert all(len(list(d.iterdir())) == 1 for d in (tmp_path / "cut" / "client_states").iterdir())


def test_client_states_on_ray_equal_inprocess(make_experiment, local_ray, tmp_path):
    common = {"rounds": 4, "clients_per_round": 3, "algorithm": {"name": "test-visits", "batch_size": 16, "lr": 0.3}}
    local = run_experiment(make_experiment(output=str(tmp_path / "local"), **common), report=False).metrics
    remote = run_experiment(make_experiment(output=str(tmp_path / "ray"), backend=RAY, **common), report=False).metrics
    assert without_times(remote) == without_times(local)


def test_resume_on_ray_equals_uninterrupted(make_experiment, local_ray, tmp_path):
    spry = CASES["spry-per-iteration"]
    full = run_experiment(make_experiment(rounds=4, output=str(tmp_path / "full"), **spry), report=False).metrics

    def stop_after_round_3(rnd, record):
        if rnd == 3:
            raise KeyboardInterrupt

    cut = make_experiment(rounds=4, backend=RAY, output=str(tmp_path / "cut"), **spry)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cut, progress=stop_after_round_3)
    assert without_times(resume_experiment(tmp_path / "cut").metrics) == without_times(full)
