import pytest

from fedtune.config import ConfigError, load_experiment, parse_override


def write(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


BASE = """
name = "x"
rounds = 2
clients_per_round = 2
[data]
name = "digits"
num_clients = 4
[model]
name = "mlp"
[algorithm]
name = "fedprox"
mu = 0.1
[server]
name = "fedyogi"
lr = 0.01
"""


def test_valid_file_and_overrides(tmp_path):
    exp = load_experiment(write(tmp_path, BASE), ["algorithm.lr=0.2", "data.alpha=0.3", "server.beta1=0.5"])
    assert exp.algorithm.hyperparameters() == {"mu": 0.1, "lr": 0.2}
    assert exp.data.alpha == 0.3
    assert exp.server.arguments() == {"lr": 0.01, "beta1": 0.5}
    assert "fedprox" in exp.to_toml()


@pytest.mark.parametrize(
    "override, field",
    [
        ("data.alpha=0", "data.alpha"),
        ("data.alpha=-1", "data.alpha"),
        ("rounds='ten'", "rounds"),
        ("data.colour=1", "data.colour"),
        ("nonsense=1", "nonsense"),
        ("data.name='nope'", "data.name"),
        ("model.name='nope'", "model.name"),
        ("algorithm.name='nope'", "algorithm.name"),
        ("server.name='nope'", "server.name"),
        ("algorithm.mu=-1", "algorithm.mu"),
        ("algorithm.typo=1", "algorithm.typo"),
        ("server.gamma=1", "server.gamma"),
        ("clients_per_round=9", "clients_per_round"),
        ("data.val_fraction=0.85", "data"),
    ],
)
def test_errors_name_the_field_in_one_line(tmp_path, override, field):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, BASE), [override])
    message = str(err.value)
    assert message.startswith(field), message
    assert "\n" not in message


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_experiment(write(tmp_path, "name = "))


def test_override_values_are_toml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_unknown_model_option_is_a_config_error(make_experiment):
    from fedtune.engine import run_experiment

    with pytest.raises(ConfigError, match=r"^model.options.depth: mlp takes no such option"):
        run_experiment(make_experiment(model={"name": "mlp", "options": {"depth": 3}}))
