"""A transformers causal LM split into a DeepSpeed PipelineModule.

The pipeline is built from the very modules of the model llmbench builds for
every other case (same seed, same weights): the embedding, each transformer
block, and the final norm + LM head. A tied LM head stays tied across stages
through DeepSpeed's TiedLayerSpec, which all-reduces the shared weight's
gradient between the first and last stage, so a pipeline case trains the same
model as its non-pipeline twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmbench.errors import Unsupported


def _causal_mask(hidden: torch.Tensor, attn_implementation: str) -> torch.Tensor | None:
    """What the blocks need to be causal: SDPA masks itself when given no mask; eager adds this one."""
    if attn_implementation == "sdpa":
        return None
    t = hidden.shape[1]
    mask = torch.full(
        (t, t), torch.finfo(hidden.dtype).min, device=hidden.device, dtype=hidden.dtype
    )
    return torch.triu(mask, diagonal=1)[None, None]


def _block_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x blocks return tuples


class _Embedding(nn.Module):
    """Token (and, for GPT-2, learned position) embedding: the first stage's entry."""

    def __init__(self, model: nn.Module):
        super().__init__()
        inner = _inner(model)
        self.tokens = inner.get_input_embeddings()
        self.positions = getattr(inner, "wpe", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.tokens(input_ids)
        if self.positions is not None:
            hidden = (
                hidden
                + self.positions(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
            )
        return hidden


class _Block(nn.Module):
    """One transformer block; Llama blocks also get their rotary embeddings computed here."""

    def __init__(self, block: nn.Module, model: nn.Module, attn_implementation: str):
        super().__init__()
        self.block = block
        self.attn_implementation = attn_implementation
        # buffers only (inv_freq): each stage holding its own copy costs nothing
        self.rotary = getattr(_inner(model), "rotary_emb", None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        kwargs = {"attention_mask": _causal_mask(hidden, self.attn_implementation)}
        if self.rotary is not None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
            kwargs["position_ids"] = position_ids
            kwargs["position_embeddings"] = self.rotary(hidden, position_ids=position_ids)
        return _block_output(self.block(hidden, **kwargs))


class _Head(nn.Module):
    """Final norm, then the LM head when it is not tied to the embedding."""

    def __init__(self, model: nn.Module, untied_head: nn.Module | None):
        super().__init__()
        inner = _inner(model)
        self.norm = getattr(inner, "ln_f", None) or inner.norm
        self.head = untied_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(hidden)
        return self.head(hidden) if self.head is not None else hidden


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "transformer", None) or model.model


def _tied_logits(embedding: _Embedding, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden, embedding.tokens.weight)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, as transformers' ForCausalLMLoss computes it."""
    shifted = logits[:, :-1].float()
    return F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def pipeline_module(
    model: nn.Module, stages: int, task: str, attn_implementation: str, checkpoint_every: int = 0
):
    """The model as a PipelineModule with ``stages`` stages, blocks balanced across them."""
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    if task != "causal-lm":
        raise Unsupported(f"pipeline parallelism is implemented for causal-lm only, not {task}")
    inner = getattr(model, "transformer", None) or getattr(model, "model", None)
    blocks = list(getattr(inner, "h", None) or getattr(inner, "layers", None) or [])
    if not blocks:
        raise Unsupported(f"llmbench has no pipeline split for {model.config.model_type}")
    if getattr(model.config, "sliding_window", None) and getattr(
        model.config, "use_sliding_window", True
    ):
        # the stages run each block on its own, with the causal mask of _causal_mask only
        raise Unsupported("the pipeline split has no sliding-window attention mask")
    if len(blocks) < stages:
        raise Unsupported(f"{len(blocks)} transformer blocks cannot fill {stages} pipeline stages")
    tied = model.config.tie_word_embeddings
    embed = (
        TiedLayerSpec("embed", _Embedding, model, tied_weight_attr="tokens.weight")
        if tied
        else LayerSpec(_Embedding, model)
    )
    layers = [embed, *[LayerSpec(_Block, block, model, attn_implementation) for block in blocks]]
    layers.append(LayerSpec(_Head, model, None if tied else model.get_output_embeddings()))
    if tied:
        layers.append(
            TiedLayerSpec(
                "embed",
                _Embedding,
                model,
                forward_fn=_tied_logits,
                tied_weight_attr="tokens.weight",
            )
        )
    return PipelineModule(
        layers=layers,
        num_stages=stages,
        loss_fn=causal_lm_loss,
        partition_method="type:_Block",
        activation_checkpoint_interval=checkpoint_every,
        # only blocks: checkpointing the embedding (integer inputs) would cut the graph
        checkpointable_layers=["_Block"],
    )
