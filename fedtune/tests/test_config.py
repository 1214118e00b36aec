import subprocess
import sys

import pytest

from fedtune import errors
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


# -- errors live in one module that imports nothing of the package ---------------------


def _fresh_modules(code: str) -> list[str]:
    """The fedtune modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(m for m in sys.modules if m.startswith('fedtune')))"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.split()


def test_errors_module_imports_nothing_of_the_package():
    assert sorted(_fresh_modules("import fedtune.errors")) == ["fedtune", "fedtune.errors"]


def test_old_error_locations_still_work():
    import fedtune.config
    import fedtune.registry

    assert fedtune.config.ConfigError is errors.ConfigError
    assert fedtune.registry.UnknownNameError is errors.UnknownNameError
    assert issubclass(errors.RunError, RuntimeError)


def test_data_models_algorithms_and_server_do_not_import_config():
    # the loop config -> data/models/algorithms -> config is gone: they import fedtune.errors
    loaded = _fresh_modules("import fedtune.data, fedtune.data.drift, fedtune.models, fedtune.algorithms, fedtune.server")
    assert "fedtune.config" not in loaded
    # and config imports cleanly whichever module comes first
    _fresh_modules("import fedtune.data.drift, fedtune.config")


# -- fixed name lists come from the registries ------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.partition='shards'", "data.partition: unknown partition 'shards'; choose one of: dirichlet, iid, natural"),
        ("drift.kind='blur'", "drift.kind: unknown drift kind 'blur'; choose one of: feature, label_shift, label_swap"),
        ("drift.schedule='weekly'", "drift.schedule: unknown drift schedule 'weekly'; choose one of: incremental, recurrent, sudden"),
    ],
)
def test_unknown_kind_names_the_registered_ones(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, BASE), [override])
    assert str(err.value) == message


def test_a_newly_registered_partition_or_drift_kind_is_accepted_without_other_edits(tmp_path, monkeypatch):
    from fedtune.data.drift import DRIFT_KINDS, SCHEDULES
    from fedtune.data.partition import PARTITIONERS, iid

    monkeypatch.setitem(PARTITIONERS._items, "shards", iid)
    monkeypatch.setitem(DRIFT_KINDS._items, "blur", DRIFT_KINDS.get("feature"))
    monkeypatch.setitem(SCHEDULES._items, "weekly", SCHEDULES.get("sudden"))
    exp = load_experiment(write(tmp_path, BASE), ["data.partition='shards'", "drift.kind='blur'", "drift.schedule='weekly'"])
    assert (exp.data.partition, exp.drift.kind, exp.drift.schedule) == ("shards", "blur", "weekly")


# -- hf:<id-or-path> ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model.name", "data.name"])
@pytest.mark.parametrize("name", ["hf:/no/such/folder", "hf:./no/such/file.csv", "hf:missing.csv", "hf:"])
def test_hf_path_that_does_not_exist_is_refused_at_validation(tmp_path, field, name):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, BASE), [f"{field}='{name}'"])
    message = str(err.value)
    assert message.startswith(f"{field}: hf:"), message
    assert "\n" not in message


def test_hf_names_resolve_through_the_registries(tmp_path):
    from fedtune.data import DATASETS
    from fedtune.models import MODELS

    (tmp_path / "toy.csv").write_text("f1,label\n1,0\n2,1\n")
    assert "hf:ylecun/mnist" in DATASETS and "hf:bert-base-uncased" in MODELS
    assert "hf:" not in DATASETS
    assert callable(DATASETS.get(f"hf:{tmp_path / 'toy.csv'}"))
    load_experiment(write(tmp_path, BASE), [f"data.name='hf:{tmp_path / 'toy.csv'}'", "model.name='hf:minilm'"])
    with pytest.raises(ConfigError, match=r"^data.name: unknown dataset 'nope'; choose one of: .*, hf:<id-or-path>$"):
        load_experiment(write(tmp_path, BASE), ["data.name='nope'"])


def test_hub_id_without_network_is_one_line_saying_how_to_give_a_folder(monkeypatch):
    from fedtune.data import load_raw
    from fedtune.data.base import DatasetInfo
    from fedtune.models import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as without network, and never a download from a test
    info = DatasetInfo(name="toy", task="classification", num_classes=2, input_shape=())
    with pytest.raises(ConfigError) as err:
        build_model("hf:fedtune-tests/no-such-model", info)
    message = str(err.value)
    assert message.startswith("model.name: cannot download 'fedtune-tests/no-such-model' from the Hugging Face hub")
    assert 'hf download fedtune-tests/no-such-model --local-dir DIR' in message
    assert 'set model.name = "hf:DIR"' in message and "\n" not in message
    with pytest.raises(ConfigError) as err:
        load_raw("hf:fedtune-tests/no-such-dataset")
    message = str(err.value)
    assert message.startswith("data.name: cannot download 'fedtune-tests/no-such-dataset'")
    assert "--repo-type dataset" in message and 'set data.name = "hf:DIR"' in message and "\n" not in message


# -- server optimizers: typed parameters ------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ('server.lr="abc"', "server.lr: Input should be a valid number, unable to parse string as a number"),
        ("server.lr=0", "server.lr: must be positive, got 0.0"),
        ("server.beta2=1.5", "server.beta2: must lie in [0, 1), got 1.5"),
        ("server.gamma=1", "server.gamma: unknown key; it takes: lr, beta1, beta2, tau, bias_correction"),
    ],
)
def test_server_arguments_are_validated_by_the_optimizers_params(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, BASE), [override])
    assert str(err.value) == message


def test_every_server_optimizer_documents_its_params():
    from fedtune.server import SERVER_OPTIMIZERS, ServerParams

    for name in SERVER_OPTIMIZERS.names():
        params = SERVER_OPTIMIZERS.get(name).Params
        assert issubclass(params, ServerParams) and params is not ServerParams, name
        assert params.model_fields, name
        for field, info in params.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


def test_server_optimizers_take_params_objects_or_keywords():
    from fedtune.server import FedOptParams, FedYogi, Flash, new_optimizer

    assert FedYogi(FedOptParams(lr=0.03, beta1=0.5)).beta1 == 0.5
    assert FedYogi(FedOptParams(lr=0.03), beta1=0.5).lr == 0.03
    opt = new_optimizer("flash", lr=0.1, guard=False)
    assert isinstance(opt, Flash) and (opt.lr, opt.guard, opt.bias_correction) == (0.1, "off", False)
    with pytest.raises(ConfigError, match=r"^server.bias_correction: "):
        new_optimizer("flash", bias_correction=True)


def test_algorithm_refuses_a_server_optimizer_it_does_not_list(tmp_path, monkeypatch):
    from fedtune.algorithms import ALGORITHMS

    monkeypatch.setattr(ALGORITHMS.get("fedprox"), "server_optimizers", ("fedadam", "flash"), raising=False)
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, BASE))  # fedprox with fedyogi
    assert str(err.value) == (
        "server.name: algorithm 'fedprox' works only with the server optimizer 'fedadam' or 'flash'; "
        "set server.name = \"fedadam\" (got 'fedyogi')"
    )
    assert load_experiment(write(tmp_path, BASE), ["server.name='fedadam'"]).server.name == "fedadam"


def test_flash_without_the_flash_server_is_refused_at_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"^server.name: algorithm 'flash' works only with the server optimizer 'flash'"):
        load_experiment(write(tmp_path, BASE.replace('name = "fedprox"\nmu = 0.1', 'name = "flash"')))


def test_unset_removes_a_key_or_a_table(tmp_path):
    path = write(tmp_path, BASE + "[drift]\nkind = \"label_swap\"\n")
    exp = load_experiment(path, unset=["drift", "algorithm.mu", "server"])
    assert exp.drift is None and "mu" not in exp.algorithm.hyperparameters()
    assert exp.server.name == "fedavg" and exp.server.arguments() == {}
    exp = load_experiment(path, ["algorithm.mu=0.5"], unset=["algorithm.mu"])  # unset first, then --set
    assert exp.algorithm.hyperparameters()["mu"] == 0.5
    for key in ["nothing", "algorithm.nothing", "data.name.x"]:
        with pytest.raises(ConfigError, match=f"^--unset '{key}': the experiment sets no such key$"):
            load_experiment(path, unset=[key])


def test_validation_error_lists_every_problem(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        load_experiment(path, ["data.alpha=0", "rounds=0", "eval.bogus=1"])
    message = str(err.value)
    assert "\n" not in message
    for field in ("rounds: ", "data.alpha: ", "eval.bogus: unknown key"):
        assert field in message
    with pytest.raises(ConfigError) as err:
        load_experiment(path, ["algorithm.lr=-1", "algorithm.mu=-1", "server.beta1=2", 'model.name="nope"'])
    message = str(err.value)
    for field in ("model.name: unknown model 'nope'", "algorithm.lr: ", "algorithm.mu: ", "server.beta1: "):
        assert field in message


def test_hf_text_dataset_finds_its_text_column_and_takes_the_models_tokenizer(tmp_path):
    from fedtune.data import load_raw

    csv = tmp_path / "reviews.csv"
    csv.write_text("sentence,label\na fine film,1\na dull film,0\nfine acting,1\n")
    exp = load_experiment(raw={"data": {"name": f"hf:{csv}", "num_clients": 1, "options": {"max_length": 8}},
                               "model": {"name": "hf:minilm"}, "clients_per_round": 1})
    assert exp.data.options == {"max_length": 8, "tokenizer": "minilm"}  # the model's own tokenizer
    mine = load_experiment(raw={"data": {"name": f"hf:{csv}", "num_clients": 1, "options": {"tokenizer": "smollm2"}},
                                "model": {"name": "hf:minilm"}, "clients_per_round": 1})
    assert mine.data.options["tokenizer"] == "smollm2"  # one named stays
    raw = load_raw(exp.data.name, exp.data.options)  # no text_column: "sentence" is the one text column
    assert raw.examples.tensors["input_ids"].shape == (3, 8) and raw.info.num_classes == 2
    two = tmp_path / "pairs.csv"
    two.write_text("premise,hypothesis,label\na,b,1\nc,d,0\n")
    with pytest.raises(ConfigError, match="set text_column"):  # two text columns: which one is not guessed
        load_raw(f"hf:{two}", {"tokenizer": "minilm"})
