"""The zeroth-order and forward-gradient baselines of Spry: MeZO, BAFFLE, FwdLLM.

Estimators (``fedtune.grad``): the expectation points along the backprop gradient (cosine
of the mean of many estimates), the scale is the paper's (a finite difference equals the
directional derivative, so a wrong divisor shows), seeded reproducibility, MeZO's in-place
perturbation (restored to a stated float tolerance, never holding a whole perturbation),
FwdLLM's selection (every candidate scored, K distinct tangents) and pacing. Algorithms
(``fedtune.algorithms``): per-iteration replay bit for bit where the estimator is
replayable, the previous global update travelling in the task, and runs in the engine.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from fedtune.algorithms import ALGORITHMS, ClientTask
from fedtune.algorithms.baffle import BaffleParams
from fedtune.algorithms.fedmezo import FedMeZO, FedMeZOParams
from fedtune.algorithms.fwdllm import FwdLLM, FwdLLMParams
from fedtune.config import ConfigError
from fedtune.data.base import Batch, ClientData, Examples
from fedtune.grad import (
    ESTIMATORS,
    alignment_scores,
    backprop_gradient,
    central_difference,
    dropout_disabled,
    fwdllm_gradient,
    jvp,
    make_tangents,
    mezo_directional,
    model_loss,
    rank_candidates,
    rebuild_gradient,
)
from fedtune.measure.memory import TensorMemoryTracker
from fedtune.models.base import get_trainable
from fedtune.seeding import torch_generator
from fedtune.server import new_optimizer


class SmallNet(nn.Module):
    """A two-layer tanh network on 6 inputs, 3 classes (59 weights), with dropout."""

    def __init__(self, hidden: int = 5, inputs: int = 6, dtype=torch.float32) -> None:
        super().__init__()
        self.l1 = nn.Linear(inputs, hidden, dtype=dtype)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(hidden, 3, dtype=dtype)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.drop(torch.tanh(self.l1(batch["x"]))))


def make_data(n: int = 48, seed: int = 0, inputs: int = 6, dtype=torch.float32) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, inputs, generator=g, dtype=dtype)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    ex = Examples({"x": x, "labels": y})
    return ClientData(train=ex, val=ex.subset([0, 1]), test=ex.subset([2, 3]))


def setup(dtype=torch.float32):
    """(loss closure in ``dtype`` end to end, in eval mode; a copy of the weights)."""
    torch.manual_seed(0)
    model = SmallNet(dtype=dtype)
    batch = make_data(dtype=dtype).train.tensors
    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_fn(p):
        with dropout_disabled(model):
            logits = torch.func.functional_call(model, dict(p), (batch,))
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    return loss_fn, params


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten().double() for g in grads.values()])


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(flat(a), flat(b), dim=0))


# -- estimators: direction and scale --------------------------------------------------
@pytest.mark.parametrize("name", ["mezo", "baffle", "fwdllm", "spsa", "forward"])
def test_mean_of_many_estimates_points_along_backprop(name):
    # 59 weights; the mean of N estimates has relative error about sqrt(59/N) = 0.17 at
    # N = 2000, a cosine of about 0.99. A wrong sign, a stale or shared tangent, or a
    # pass with dropout on (each pass a different function) would take it far below 0.9.
    loss_fn, params = setup()
    _, exact = backprop_gradient(loss_fn, params)
    est = ESTIMATORS.get(name).estimate(loss_fn, params, 11, (0, 1, 2), 2000, "gaussian")
    assert cosine(est.grads, exact) > 0.95
    assert 0.8 < flat(est.grads).norm() / flat(exact).norm() < 1.25  # unbiased: the size too
    untouched = setup()[1]
    for n, p in params.items():  # out-of-place estimators leave the tensors alone; MeZO restores
        if name == "mezo":       # them to rounding, which random-walks over its 2000 x 3 moves
            torch.testing.assert_close(p, untouched[n], rtol=0, atol=1e-5)
        else:
            assert torch.equal(p, untouched[n])


@pytest.mark.parametrize(("name", "scale"), [("mezo", 1e-3), ("baffle", 1e-4), ("spsa", 1e-3)])
def test_zeroth_order_scalar_is_the_directional_derivative(name, scale):
    # In float64 a central difference with step s is ∇L·v to O(s²): the divisor 2s of
    # MeZO's and BAFFLE's papers. Dividing by s (or s/2, the released BAFFLE's slip) is off 2x.
    loss_fn, params = setup(torch.float64)
    est = ESTIMATORS.get(name).estimate(loss_fn, params, 3, (4, 5, 6), 3, "gaussian")
    for k in range(3):
        _, d = jvp(loss_fn, params, make_tangents(params, 3, (4, 5, 6), k))
        assert float(est.jvps[k]) == pytest.approx(float(d), rel=1e-5, abs=1e-9)
    # and the step the estimator uses is the paper's: a 10x larger one moves the value by O(s²)
    v = make_tangents(params, 3, (4, 5, 6), 0)
    _, at_scale = central_difference(loss_fn, params, v, sigma=scale)
    assert float(est.jvps[0]) == pytest.approx(float(at_scale), rel=1e-5)  # float32 scalars


def test_fwdllm_estimate_is_the_mean_over_its_chosen_tangents():
    loss_fn, params = setup(torch.float64)
    guide = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype) for n, p in params.items()}
    est = fwdllm_gradient(loss_fn, params, 5, (1, 2, 3), 4, guide=guide, num_candidates=16, max_tangents=4)
    chosen = rank_candidates(params, guide, 5, (1, 2, 3), 16)[:4]
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for i, c in enumerate(chosen):
        v = make_tangents(params, 5, (1, 2, 3), c)
        _, d = jvp(loss_fn, params, v)
        assert float(est.jvps[i]) == pytest.approx(float(d), rel=1e-6)
        for n in params:
            expected[n] += float(d) * v[n] / 4
    for n in params:
        torch.testing.assert_close(est.grads[n], expected[n])
    # no guide: candidates in index order, the plain forward gradient of K tangents
    plain = fwdllm_gradient(loss_fn, params, 5, (1, 2, 3), 3)
    forward = ESTIMATORS.get("forward").estimate(loss_fn, params, 5, (1, 2, 3), 3, "gaussian")
    for n in params:
        torch.testing.assert_close(plain.grads[n], forward.grads[n])


@pytest.mark.parametrize("name", ["mezo", "baffle", "fwdllm"])
def test_estimators_are_seeded(name):
    fn = ESTIMATORS.get(name).estimate

    def run(seed, keys):  # fresh weights each time: MeZO moves them in place (to rounding)
        loss_fn, params = setup()
        return fn(loss_fn, params, seed, keys, 2, "gaussian")

    a, b = run(7, (1, 2, 3)), run(7, (1, 2, 3))
    assert all(torch.equal(a.grads[n], b.grads[n]) for n in a.grads) and torch.equal(a.jvps, b.jvps)
    for seed, keys in [(8, (1, 2, 3)), (7, (1, 2, 4)), (7, (2, 2, 3))]:
        assert not torch.equal(a.jvps, run(seed, keys).jvps)


@pytest.mark.parametrize("name", ["mezo", "baffle", "spsa", "forward"])
def test_replayable_estimators_are_rebuilt_from_their_scalars_bit_for_bit(name):
    assert ESTIMATORS.get(name).replayable
    loss_fn, params = setup()
    est = ESTIMATORS.get(name).estimate(loss_fn, params, 9, (3, 1, 4), 3, "rademacher")
    rebuilt = rebuild_gradient(est.jvps.tolist(), params, 9, (3, 1, 4), "rademacher")
    assert all(torch.equal(rebuilt[n], est.grads[n]) for n in params)


def test_fwdllm_is_not_replayable_and_refuses_per_iteration():
    # its tangents depend on the guide: scalars and seed alone do not rebuild a step
    assert not ESTIMATORS.get("fwdllm").replayable
    with pytest.raises(ValueError, match="per_iteration needs a seeded estimator"):
        FwdLLMParams(communication="per_iteration")


# -- MeZO's in-place perturbation -------------------------------------------------------
def test_mezo_passes_restore_the_weights_to_rounding():
    # θ → θ+εz → θ−εz → θ in float32 is not exact: each element comes back within one
    # rounding of the largest intermediate, |θ' − θ| ≤ 2 u max(|θ|, 2ε|z|) with u = 2⁻²⁴
    # (measured: about half the elements are bit-identical, the rest one ulp off). In
    # float64 the same bound holds with u = 2⁻⁵³. The server replays these moves too,
    # so per-iteration FedMeZO is still exact (test below).
    for dtype in (torch.float32, torch.float64):
        loss_fn, params = setup(dtype)
        before = {n: p.clone() for n, p in params.items()}
        _, d = mezo_directional(loss_fn, params, 1, (0, 0, 0), 0, eps=1e-3)
        z = make_tangents(params, 1, (0, 0, 0), 0)
        u = torch.finfo(dtype).eps / 2
        for n in params:
            bound = 2 * u * torch.maximum(before[n].abs(), 2e-3 * z[n].abs())
            assert bool(((params[n] - before[n]).abs() <= bound).all()), n
        # the scalar is the out-of-place central difference's (same θ±εz up to rounding)
        _, ref = central_difference(loss_fn, before, z, sigma=1e-3)
        assert float(d) == pytest.approx(float(ref), rel=1e-3 if dtype == torch.float32 else 1e-9)


def test_mezo_never_holds_a_whole_perturbation():
    # four 64 KiB tensors; the loss is matrix-vector products (no tensor-sized temporaries),
    # so the pass's peak is one tensor's z: a perturbation drawn for all tensors at once
    # (as make_tangents does) would hold four.
    g = torch.Generator().manual_seed(0)
    params = {f"w{i}": torch.randn(128, 128, generator=g) for i in range(4)}
    x = torch.randn(128, generator=g)

    def loss_fn(p):
        return sum(torch.tanh(w @ x).sum() for w in p.values())

    one = 128 * 128 * 4
    with TensorMemoryTracker() as tracker, tracker.phase("mezo"):
        mezo_directional(loss_fn, params, 0, (0,), 0)
    assert tracker.phases["mezo"]["peak_above_start"] < 1.5 * one


def test_mezo_client_step_stays_at_inference_memory():
    # A FedMeZO step holds no gradient, no whole perturbation, no optimizer state: its peak
    # above the start of the step is one weight matrix's z plus the batch's activations
    # (the estimated-gradient client with the same estimator materializes a gradient and
    # a perturbation of every tensor: more than two matrices).
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 3))
    wrapper = type("W", (nn.Module,), {"forward": lambda self, b: self.net(b["x"])})()
    wrapper.net = model
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(4, 256, generator=g), "labels": torch.tensor([0, 1, 2, 0])}
    theta = {n: p.detach().clone() for n, p in wrapper.named_parameters()}
    loss = model_loss(wrapper, batch, dropout=False)
    task = ClientTask(client_id=0, round=1, seed=0)
    one = 256 * 256 * 4
    peaks = {}
    for name, algo in [("fedmezo", FedMeZO(FedMeZOParams(lr=1e-3), new_optimizer("fedavg"))),
                       ("mezo_estimator", ALGORITHMS.get("fedfgd")(ALGORITHMS.get("fedfgd").Params(estimator="mezo", optimizer="sgd"), new_optimizer("fedavg")))]:
        client = algo.client()
        optimizer = torch.optim.SGD(list(theta.values()), lr=1e-3)
        estimate = client.estimator(task)
        with TensorMemoryTracker() as tracker, tracker.phase("step"):
            client.train_step(estimate, loss, theta, optimizer, task, 0)
        peaks[name] = tracker.phases["step"]["peak_above_start"]
    assert peaks["fedmezo"] <= one + 1024 < 2 * one < peaks["mezo_estimator"], peaks  # one z at a time


# -- FwdLLM: selection and pacing -------------------------------------------------------
def test_fwdllm_scores_every_candidate_and_takes_k_distinct():
    loss_fn, params = setup()
    pool = 40
    # the guide is candidate 2's tangent plus 0.7 of the last one's (|cos| 0.82 and 0.57;
    # a random candidate in 59 dimensions rarely passes 0.4)
    best = make_tangents(params, 4, (0, 0, 0), 2)
    last = make_tangents(params, 4, (0, 0, 0), pool - 1)
    guide = {n: best[n] + 0.7 * last[n] for n in params}
    scores = alignment_scores(params, guide, 4, (0, 0, 0), pool)
    for c in (0, 2, 17, pool - 1):  # the score is |cos| of that candidate's tangent with the guide
        v = make_tangents(params, 4, (0, 0, 0), c)
        assert scores[c] == pytest.approx(abs(cosine(v, guide)), rel=1e-6)
    order = rank_candidates(params, guide, 4, (0, 0, 0), pool)
    assert order[:2] == [2, pool - 1] and sorted(order) == list(range(pool))
    est = fwdllm_gradient(loss_fn, params, 4, (0, 0, 0), 5, guide=guide, num_candidates=pool, max_tangents=5)
    assert len(set(est.jvps.tolist())) == 5  # five distinct tangents, five distinct derivatives


def test_fwdllm_selection_aligns_the_estimate_with_a_good_guide():
    # With the previous update along the gradient, the best of 32 candidates gives a single
    # estimate a much larger cosine with the gradient than an unselected tangent.
    loss_fn, params = setup()
    _, exact = backprop_gradient(loss_fn, params)
    guided, plain = [], []
    for step in range(40):
        keys = (1, 0, step)
        guided.append(cosine(fwdllm_gradient(loss_fn, params, 0, keys, 1, guide=exact, num_candidates=32).grads, exact))
        plain.append(cosine(fwdllm_gradient(loss_fn, params, 0, keys, 1).grads, exact))
    assert sum(guided) / 40 > 2 * sum(plain) / 40 > 0


def test_fwdllm_pacing_adds_tangents_until_the_mean_is_precise_enough():
    loss_fn, params = setup()
    kwargs = {"num_candidates": 64, "max_tangents": 64}
    loose = fwdllm_gradient(loss_fn, params, 0, (0,), 1, variance_threshold=1e6, **kwargs)
    tight = fwdllm_gradient(loss_fn, params, 0, (0,), 1, variance_threshold=1e-6, **kwargs)
    fixed = fwdllm_gradient(loss_fn, params, 0, (0,), 3, **kwargs)
    assert len(loose.jvps) == 2 and len(tight.jvps) == 64 and len(fixed.jvps) == 64
    # a 59-dimensional forward gradient has a noise-to-signal ratio near 60/k: τ = 4 needs
    # on the order of 15 tangents, τ = 1 on the order of 60
    middle = [len(fwdllm_gradient(loss_fn, params, 0, (s,), 1, variance_threshold=4.0, **kwargs).jvps) for s in range(8)]
    assert 4 <= sorted(middle)[4] <= 40, middle
    with pytest.raises(ValueError, match="num_candidates"):
        fwdllm_gradient(loss_fn, params, 0, (0,), 1, num_candidates=2, max_tangents=4)


# -- algorithms -------------------------------------------------------------------------
def fit(algo, model, state, data, task):
    result, client_state = algo.client().fit(model, state, data, task)
    assert client_state is None
    return result


def build(cls, params_cls, **overrides):
    torch.manual_seed(0)
    model = SmallNet()
    algo = cls(params_cls(**{"batch_size": 8, **overrides}), new_optimizer("fedavg"))
    algo.setup(model, None)
    return algo, model


@pytest.mark.parametrize(("cls", "params_cls", "extra"), [(FedMeZO, FedMeZOParams, {"lr": 1e-2}),
                                                          (ALGORITHMS.get("baffle"), BaffleParams, {"max_steps": 3})])
def test_per_iteration_replay_equals_the_clients_tensors_bit_for_bit(cls, params_cls, extra):
    tensors = {}
    for mode in ("per_epoch", "per_iteration"):
        algo, model = build(cls, params_cls, communication=mode, num_tangents=2, weight_decay=0.01, **extra)
        state = get_trainable(model)
        task = algo.configure_round(1, [7], state, seed=3)[7]
        result = fit(algo, model, state, make_data(), task)
        if mode == "per_iteration":
            assert result.tensors == {} and result.bytes_up == 4 * 2 * result.metrics["steps"]
            result = algo.rebuild(state, result)
        tensors[mode] = result.tensors
    assert tensors["per_epoch"].keys() == tensors["per_iteration"].keys()
    assert all(torch.equal(tensors["per_epoch"][n], tensors["per_iteration"][n]) for n in tensors["per_epoch"])


def test_fedmezo_client_step_is_sgd_on_the_mezo_estimate():
    # θ' = θ − η (1/K) Σ d_k z_k: the in-place update agrees with an SGD step on the
    # registered estimator's materialized estimate (to float rounding)
    algo, model = build(FedMeZO, FedMeZOParams, lr=0.05, max_steps=1, num_tangents=3)
    state = get_trainable(model)
    task = algo.configure_round(2, [4], state, seed=1)[4]
    data = make_data()
    result = fit(algo, model, state, data, task)
    batch = next(iter(data.train.batches(8, torch_generator(1, "batches", 2, 4, 0))))
    theta = {n: t.clone() for n, t in state.items()}
    est = ESTIMATORS.get("mezo").estimate(model_loss(model, batch, dropout=False), theta, 1, (2, 4, 0), 3, "gaussian")
    for n in state:
        torch.testing.assert_close(result.tensors[n], state[n] - 0.05 * est.grads[n], rtol=0, atol=1e-6)
    assert not torch.equal(result.tensors["head.weight"], state["head.weight"])


def test_fwdllm_previous_update_travels_in_the_task():
    algo, model = build(FwdLLM, FwdLLMParams, lr=0.05, max_steps=2, variance_threshold=None, max_tangents=2, num_tangents=2)
    state = get_trainable(model)
    first = algo.configure_round(1, [0, 1], state, seed=0)
    assert all(t.guide is None for t in first.values())
    results = [fit(algo, model, state, make_data(seed=c), t) for c, t in first.items()]
    new = algo.aggregate(1, state, results)
    second = algo.configure_round(2, [0, 1], new, seed=0)
    for task in second.values():
        assert set(task.guide) == set(state)
        assert all(torch.equal(task.guide[n], new[n] - state[n]) for n in state)
        assert algo.bytes_down(task, new) == 2 * sum(t.numel() * 4 for t in state.values())
    # the task is plain data: it pickles, and the client reads the guide from it alone
    task = pickle.loads(pickle.dumps(second[0]))
    guided = fit(algo, model, new, make_data(), task)
    unguided = fit(algo, model, new, make_data(), ClientTask(task.client_id, task.round, task.seed, task.tensor_names))
    assert not torch.equal(guided.tensors["l1.weight"], unguided.tensors["l1.weight"])
    # the server state a checkpoint holds carries the update
    restored = FwdLLM(algo.params, new_optimizer("fedavg"))
    restored.load_state_dict(pickle.loads(pickle.dumps(algo.state_dict())))
    assert all(torch.equal(restored.previous_update[n], algo.previous_update[n]) for n in state)


def test_options_that_cannot_apply_are_refused_in_one_line(make_experiment):
    with pytest.raises(ValueError, match="momentum: MeZO"):
        FedMeZOParams(momentum=0.9)
    with pytest.raises(ValueError, match="max_tangents"):
        FwdLLMParams(num_tangents=4, max_tangents=2)
    for algorithm in ({"name": "fedmezo", "optimizer": "adamw"}, {"name": "baffle", "estimator": "forward"},
                      {"name": "fwdllm", "communication": "per_iteration"}):
        with pytest.raises(ConfigError) as err:
            make_experiment(algorithm=algorithm)
        assert "\n" not in str(err.value) and str(err.value).startswith("algorithm"), str(err.value)


@pytest.mark.parametrize(("algorithm", "up"), [
    ({"name": "fedmezo", "lr": 1e-2}, "tensors"),
    ({"name": "fedmezo", "lr": 1e-2, "communication": "per_iteration"}, "scalars"),
    ({"name": "baffle", "num_tangents": 5}, "scalars"),
    ({"name": "fwdllm", "lr": 1e-2, "max_tangents": 3, "num_candidates": 6}, "tensors"),
])
def test_baselines_run_in_the_engine(make_experiment, algorithm, up):
    from fedtune.engine import run_experiment

    exp = make_experiment(**{"rounds": 2, "algorithm": {"batch_size": 16, **algorithm}, "server.name": "fedyogi"})
    metrics = run_experiment(exp, report=False).metrics
    assert len(metrics) == 2 and "test_accuracy" in metrics[-1] and not any(m["failures"] for m in metrics)
    for m in metrics:
        tangents = sum(m["client_tangents"][c] * m["client_steps"][c] for c in m["client_steps"])
        if up == "scalars":
            assert m["bytes_up"] == 4 * tangents
        else:
            assert m["bytes_up"] == m["bytes_down"] * (0.5 if algorithm["name"] == "fwdllm" and m["round"] > 1 else 1)
    assert math.isfinite(metrics[-1]["train_loss"])


def test_fwdllm_resumed_run_equals_a_straight_run(make_experiment, tmp_path):
    from fedtune.engine import resume_experiment, run_experiment

    algorithm = {"name": "fwdllm", "lr": 1e-2, "batch_size": 16, "max_tangents": 2, "num_candidates": 4}
    straight = run_experiment(make_experiment(rounds=3, algorithm=algorithm, output=str(tmp_path / "a")), report=False)
    run_experiment(make_experiment(rounds=2, algorithm=algorithm, output=str(tmp_path / "b"), **{"checkpoint.every": 1}), report=False)
    resumed = resume_experiment(tmp_path / "b", overrides=["rounds=3"])

    def strip(rows):
        return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in rows]

    assert strip(resumed.metrics)[-1] == strip(straight.metrics)[-1]


# -- the head-to-head benchmark's reduced mode, as a smoke test ----------------------------
def test_head_to_head_benchmark_reduced_mode_smoke(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "spry_vs_zeroth.py"
    spec = importlib.util.spec_from_file_location("spry_vs_zeroth", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.METHODS, "fedmezo", ({"name": "fedmezo", "lr": 1e-2, "max_steps": 1}, bench.YOGI))
    runs = [bench.run_one(method, 0, 2) for method in ("fedmezo", "fedsgd")]
    summary = bench.summarize(runs, {"fedmezo": {"peak_above_model": 2048}})
    assert summary["best_zeroth_order"] == "fedmezo"
    assert summary["target_accuracy"] == runs[0]["final_test_accuracy"]
    assert summary["methods"]["fedmezo"]["rounds_to_target"] == 2  # evaluated at its last round
    assert summary["methods"]["fedmezo"]["bytes_up_per_client_round"] == summary["methods"]["fedsgd"]["bytes_down_per_client_round"]
    meta = {"date": "-", "rounds": 2, "seeds": [0], "load_average_start": [0.0], "load_average_end": [0.0],
            "command": "-", "tuning": {"seed": None}}
    text = bench.table(summary, meta)
    assert "| fedmezo | 0.01 |" in text and "| 2.0 |" in text  # lr, peak KiB
    assert bench.to_target([{"round": 5, "train_s": 1.0, "test_accuracy": 0.4}, {"round": 10, "train_s": 2.0, "test_accuracy": 0.6}], 0.5) == (10, 2.0)
    assert bench.to_target([{"round": 5, "train_s": 1.0, "test_accuracy": 0.4}], 0.5) == (None, None)
