"""Tiny random Hugging Face models saved to local folders, for fast offline tests."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 97


def save_tiny(family: str, folder: Path) -> Path:
    """Save a 2-layer, hidden-32 random ``family`` model (bert, gpt2, llama) to ``folder``."""
    import transformers

    if family == "bert":
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=64)
        cls = transformers.BertModel
    elif family == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64)
        cls = transformers.GPT2LMHeadModel
    elif family == "llama":
        config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
        cls = transformers.LlamaForCausalLM
    else:
        raise ValueError(family)
    torch.manual_seed(0)
    path = folder / f"tiny-{family}"
    cls(config).save_pretrained(path)
    return path


def text_batch(task: str, batch: int = 3, seq: int = 10, num_classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq - 3 :] = 0  # one padded row
    if task == "classification":
        labels = torch.randint(0, num_classes, (batch,), generator=g)
    else:
        labels = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
        labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
