"""Engine settings: refused where they cannot apply; a Ray address that does not answer."""

from __future__ import annotations

import socket

import pytest
import test_backends  # noqa: F401  (registers the stateful test algorithm "test-visits")

from fedtune.config import ConfigError
from fedtune.engine import run_experiment


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": {"name": "inprocess", "num_actors": 2}}, "backend: num_actors applies to the ray backend only"),
        ({"backend": "spark"}, "backend.name: unknown backend 'spark'; choose one of: flower, inprocess, ray"),
        ({"client_state": "disk"}, "client_state: algorithm 'fedavg' keeps no client state"),
        ({"client_state": "cloud", "algorithm": {"name": "test-visits"}}, "client_state: unknown client-state store 'cloud'; choose one of: disk, memory"),
        ({"device": "gpu"}, "device: String should match pattern"),
    ],
)
def test_engine_settings_that_cannot_apply_are_refused(make_experiment, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_experiment(**overrides)


def test_backend_shorthand(make_experiment):
    assert make_experiment(backend="ray").backend.name == "ray"


def test_an_address_where_nothing_answers_is_one_line_in_seconds(make_experiment, tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exp = make_experiment(backend={"name": "ray", "address": f"127.0.0.1:{port}"}, output=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=f"backend.address: nothing answers at 127.0.0.1:{port}"):
        run_experiment(exp)
    assert not (tmp_path / "run").exists()  # nothing half-written
