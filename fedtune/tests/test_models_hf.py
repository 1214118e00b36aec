"""Hugging Face models with peft: building, trainables, layer groups, offline models."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import VOCAB, text_batch

from fedtune.data.base import DatasetInfo, Examples
from fedtune.models import build_model
from fedtune.models.base import evaluate
from fedtune.models.hf import build_hf_model, head_names, layer_groups, load_tokenizer, trim_padding

CLS = DatasetInfo(name="t", task="classification", num_classes=3)
LM = DatasetInfo(name="t", task="causal_lm", num_classes=VOCAB)


def _trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_lora_classification_groups_and_head(tiny_dir):
    model = build_model(f"hf:{tiny_dir['bert']}", CLS, seed=0)  # the registry's hf: path
    logits = model(text_batch("classification"))
    assert logits.shape == (3, 3)
    groups = layer_groups(model)
    assert len(groups) == 2 * 2 + 1  # query/value of 2 layers, then the head
    assert all(len(g) == 2 and "lora_A" in g[0] and "lora_B" in g[1] for g in groups[:-1])
    assert groups[-1] == head_names(model) and all("classifier" in n for n in groups[-1])
    assert sorted(sum(groups, [])) == sorted(_trainable(model))
    assert all(float(p.abs().sum()) == 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert layer_groups(model, include_head=False) == groups[:-1]


def test_trailing_padding_is_trimmed_without_changing_logits(tiny_dir):
    model = build_model(f"hf:{tiny_dir['bert']}", CLS, {"lora_b_init_std": 0.01}, seed=0).eval()
    batch = text_batch("classification", batch=4, seq=12)
    batch["attention_mask"][:, 7:] = 0  # no row attends past column 7
    trimmed = trim_padding({k: batch[k] for k in ("input_ids", "attention_mask")})
    assert trimmed["input_ids"].shape == (4, 7)
    full = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # untrimmed
    assert torch.allclose(model(batch), full, atol=1e-6)
    # evaluation sorts by length so that batches trim; loss and accuracy are those of the
    # unsorted, untrimmed pass
    g = torch.Generator().manual_seed(1)
    n = 40
    ids = torch.randint(1, VOCAB, (n, 12), generator=g)
    mask = (torch.arange(12) < torch.randint(2, 13, (n, 1), generator=g)).long()
    labels = torch.randint(0, 3, (n,), generator=g)
    out = evaluate(model, Examples({"input_ids": ids, "attention_mask": mask, "labels": labels}), batch_size=8)
    with torch.no_grad():
        ref = model.model(input_ids=ids, attention_mask=mask).logits
    assert out["accuracy"] * n == int((ref.argmax(-1) == labels).sum())
    assert out["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(ref, labels)), rel=1e-6)


def test_model_init_is_seeded(tiny_dir):
    a = build_model(f"hf:{tiny_dir['bert']}", CLS, {"lora_b_init_std": 0.01}, seed=3)
    b = build_model(f"hf:{tiny_dir['bert']}", CLS, {"lora_b_init_std": 0.01}, seed=3)
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    assert all(torch.equal(sa[n], sb[n]) for n in _trainable(a))
    assert any(float(p.abs().sum()) > 0 for n, p in sa.items() if "lora_B" in n)


@pytest.mark.parametrize("family,targets", [("gpt2", "c_attn"), ("llama", "q_proj")])
def test_lora_causal_lm_defaults(tiny_dir, family, targets):
    model = build_hf_model(str(tiny_dir[family]), LM)
    assert model(text_batch("causal_lm")).shape == (3, 10, VOCAB)
    names = _trainable(model)
    assert names and all("lora_" in n for n in names) and any(targets in n for n in names)
    assert head_names(model) == []  # tied output layer frozen by default


def test_bitfit_and_ia3_group_per_tensor(tiny_dir):
    bitfit = build_hf_model(str(tiny_dir["bert"]), CLS, peft="bitfit")
    names = _trainable(bitfit)
    assert all(n.endswith(".bias") or "classifier" in n for n in names)
    assert all(len(g) == 1 for g in layer_groups(bitfit)[:-1])
    ia3 = build_hf_model(str(tiny_dir["llama"]), LM, peft="ia3")
    assert _trainable(ia3) and all("ia3_l" in n for n in _trainable(ia3))
    assert len(layer_groups(ia3)) == len(_trainable(ia3)) == 2 * 3
    with pytest.raises(ValueError, match="BitFit needs bias"):
        build_hf_model(str(tiny_dir["llama"]), LM, peft="bitfit")


def test_bad_options_fail_clearly(tiny_dir):
    with pytest.raises(ValueError, match="unknown peft method"):
        build_hf_model(str(tiny_dir["bert"]), CLS, peft="prefix")
    with pytest.raises(ValueError, match="unknown dtype"):
        build_hf_model(str(tiny_dir["bert"]), CLS, dtype="float33")
    model = build_hf_model(str(tiny_dir["bert"]), CLS)
    with pytest.raises(ValueError, match="causal language models only"):
        model(text_batch("classification"), loss_chunk_size=4)


def test_offline_minilm_loads():
    info = DatasetInfo(name="t", task="classification", num_classes=4)
    model = build_hf_model("minilm", info)
    tok = load_tokenizer("minilm")
    enc = tok(["to be or not to be", "that is the question"], padding="max_length", max_length=16,
              truncation=True, return_tensors="pt")
    logits = model({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert len(layer_groups(model)) == 6 * 2 + 1


def test_offline_smollm2_loads():
    tok = load_tokenizer("smollm2")
    model = build_hf_model("smollm2", DatasetInfo(name="t", task="causal_lm", num_classes=len(tok), tokenizer=tok))
    ids = tok(["Shall I compare thee"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    assert len(layer_groups(model)) == 30 * 2  # q_proj and v_proj of 30 layers
