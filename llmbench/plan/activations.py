"""Activation memory: what autograd keeps for backward, per GPU.

The structure follows Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models" (section 4): one layer stores
``sbh(34 + 5as/h)`` bytes with 16-bit activations and 1-byte dropout masks,
split into parts that tensor parallelism divides (attention and MLP
internals), parts only sequence parallelism divides (layer norms, the inputs
of the first matmuls, residual dropout masks), and the attention core that
selective recomputation drops. Full recomputation stores only each layer's
input. The first pipeline stage holds the activations of ``p`` micro-batches
in flight (1F1B schedule, Narayanan et al. 2021).

What one layer saves depends on the implementation, so each family has a
recipe counted tensor by tensor from transformers 5 with the saved-tensor probe
(``llmbench.plan.probe.measure_activations``); ``PAPER`` is the paper's own
count (fused GeLU, no flash attention), which reproduces ``sbh(34 + 5as/h)``.
All functions take scalars or numpy arrays (one entry per configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llmbench.define.models import Dims

FP32_BYTES = 4


@dataclass(frozen=True)
class Recipe:
    """Tensors one transformer layer saves, in units of (tokens × width) each."""

    name: str
    outside: float
    """hidden-sized tensors in the activation dtype outside the TP regions (norms, first-matmul inputs)."""
    outside_fp32: float
    """hidden-sized tensors kept in fp32 whatever the precision (RMSNorm's upcast input)."""
    outside_masks: float
    """hidden-sized dropout masks on the residual path."""
    inside: float
    """hidden-sized tensors inside the TP regions: queries, attention-projection input."""
    inside_kv: float
    """keys and values, scaled by num_kv_heads / num_heads (grouped-query attention)
    with SDPA; eager attention repeats them to every head first and keeps the copies."""
    mlp: float
    """intermediate-sized tensors (activation-function inputs/outputs, second-matmul input)."""
    softmax_fp32: bool
    """eager attention keeps the softmax in fp32 before casting (Llama)."""
    attention_dropout: bool
    """eager attention keeps a dropout mask and output of size heads × seq²."""
    embed_masks: float
    """hidden-sized masks after the embedding (first stage)."""
    checkpointed_mask: bool
    """eager attention passes a (batch, 1, seq, seq) mask into every checkpointed layer,
    so full recomputation keeps it (once: the layers share it)."""
    head: float
    """hidden-sized tensors after the last block (final norm, head input)."""
    head_fp32: float
    source: str


# Korthikanti et al. 2022, section 4.1: attention 11sbh + 5as²b (QKV input 2,
# Q and K 4, V 2, projection input 2, dropout mask 1), MLP 19sbh (input 2,
# GeLU input 8, second-linear input 8, mask 1), two LayerNorm inputs 4sbh.
PAPER = Recipe(
    name="paper",
    outside=4,
    outside_fp32=0,
    outside_masks=2,
    inside=2,
    inside_kv=2,
    mlp=2,
    softmax_fp32=False,
    attention_dropout=True,
    embed_masks=1,
    checkpointed_mask=False,
    head=2,
    head_fp32=0,
    source="Korthikanti et al. 2022, section 4.1 (fused GeLU, 1-byte masks, no flash attention)",
)

# Counted from transformers 5 with the saved-tensor probe, as llmbench builds
# the models: without dropout (models.hf_config), so no masks are kept.
# GPT-2's gelu_new is written out in Python and keeps four intermediate-sized
# tensors where a fused GeLU keeps one.
GPT2 = Recipe(
    name="gpt2",
    outside=4,
    outside_fp32=0,
    outside_masks=0,
    inside=2,
    inside_kv=2,
    mlp=5,
    softmax_fp32=False,
    attention_dropout=False,
    embed_masks=0,
    checkpointed_mask=True,
    head=2,
    head_fp32=0,
    source="transformers 5 GPT2Model without dropout, counted with llmbench.plan.probe.measure_activations",
)
# Llama: each RMSNorm keeps its fp32 upcast input plus its normalised and
# weighted outputs; SwiGLU keeps gate, up, silu(gate) and their product.
LLAMA = Recipe(
    name="llama",
    outside=4,
    outside_fp32=2,
    outside_masks=0,
    inside=2,
    inside_kv=2,
    mlp=4,
    softmax_fp32=True,
    attention_dropout=False,
    embed_masks=0,
    checkpointed_mask=False,
    head=2,
    head_fp32=1,
    source="transformers 5 LlamaModel, counted with llmbench.plan.probe.measure_activations",
)
# BERT and DistilBERT (post-LN, exact GeLU, dropout off in llmbench): the
# paper's count without masks. Not checked with the probe.
BERT = replace(
    PAPER,
    name="bert",
    outside_masks=0,
    attention_dropout=False,
    embed_masks=0,
    source="Korthikanti et al. 2022 without dropout; not checked with the probe",
)
RECIPES = {"gpt2": GPT2, "llama": LLAMA, "bert": BERT, "distilbert": BERT}


def mask_bytes(device: str, act_bytes):
    """CUDA dropout keeps a bool mask; the CPU kernel keeps it in the activation dtype."""
    return 1 if device == "cuda" else act_bytes


def attention_core_bytes(
    recipe: Recipe, attention: str, dims: Dims, seq_len, micro_batch, act_bytes, device: str
):
    """Bytes of the attention core (softmax and its dropout), what selective recompute drops.

    Flash / memory-efficient SDPA keeps only a fp32 log-sum-exp per head and
    position; eager attention keeps heads × seq² probabilities.
    """
    heads_tokens = dims.num_heads * seq_len * micro_batch
    if attention != "eager":
        return FP32_BYTES * heads_tokens
    if recipe.softmax_fp32:
        per = FP32_BYTES + np.where(act_bytes < FP32_BYTES, act_bytes, 0)
    else:
        per = act_bytes
    if recipe.attention_dropout:
        per = per + mask_bytes(device, act_bytes) + act_bytes
    return per * heads_tokens * seq_len


@dataclass(frozen=True)
class LayerParts:
    """One layer's saved bytes for one micro-batch, split the way TP/SP/recompute act on them."""

    outside: object
    inside: object
    core: object


def layer_parts(
    recipe: Recipe, attention: str, dims: Dims, seq_len, micro_batch, act_bytes, device: str
) -> LayerParts:
    tokens = seq_len * micro_batch
    h, f = dims.hidden_size, dims.intermediate_size
    kv_share = 1 if attention == "eager" else dims.kv_heads / dims.num_heads
    m = mask_bytes(device, act_bytes)
    outside = (
        tokens
        * h
        * (recipe.outside * act_bytes + recipe.outside_fp32 * FP32_BYTES + recipe.outside_masks * m)
    )
    inside = tokens * (
        h * act_bytes * (recipe.inside + recipe.inside_kv * kv_share) + f * act_bytes * recipe.mlp
    )
    core = attention_core_bytes(recipe, attention, dims, seq_len, micro_batch, act_bytes, device)
    return LayerParts(outside=outside, inside=inside, core=core)


def per_layer_bytes(parts: LayerParts, tp, sequence_parallel, checkpointing):
    """Bytes one layer keeps for one micro-batch on one GPU (Korthikanti et al. 2022, table 2).

    ``checkpointing``: 0 none, 1 selective (attention core recomputed), 2 full
    (only the layer input is kept; see :func:`stage_activation_bytes`).
    """
    outside = np.where(sequence_parallel, parts.outside / tp, parts.outside)
    core = np.where(checkpointing == 1, 0, parts.core / tp)
    return outside + parts.inside / tp + core


def block_activation_bytes(
    recipe: Recipe,
    attention: str,
    dims: Dims,
    seq_len,
    micro_batch,
    act_bytes,
    tp,
    layers,
    in_flight,
    sequence_parallel,
    checkpointing,
    device: str,
    embedding,
):
    """Activations of ``layers`` blocks for ``in_flight`` micro-batches on one GPU.

    With full recomputation each layer keeps its input (``2sbh`` with 16-bit
    activations), and the layer being recomputed briefly holds everything
    ``per_layer_bytes`` would. ``embedding``: this stage runs the embedding
    (first pipeline stage), whose dropout mask is kept too, as is the
    attention mask checkpointed layers share.
    """
    parts = layer_parts(recipe, attention, dims, seq_len, micro_batch, act_bytes, device)
    layer = per_layer_bytes(
        parts, tp, sequence_parallel, np.where(checkpointing == 2, 0, checkpointing)
    )
    tokens_h = seq_len * micro_batch * dims.hidden_size
    layer_input = tokens_h * act_bytes / np.where(sequence_parallel, tp, 1)
    stored = np.where(checkpointing == 2, layer_input, layer)
    working = np.where(checkpointing == 2, layer, 0)
    embed = np.where(embedding, tokens_h * recipe.embed_masks * mask_bytes(device, act_bytes), 0)
    if recipe.checkpointed_mask and attention == "eager":
        embed = embed + np.where(checkpointing == 2, micro_batch * seq_len**2 * act_bytes, 0)
    return in_flight * (layers * stored + embed) + working


def logits_loss_bytes(recipe: Recipe, dims: Dims, task: str, seq_len, micro_batch, act_bytes):
    """After the last block: final norm and head inputs, the logits and the loss.

    A language-model loss upcasts the logits to fp32 and keeps the fp32
    log-softmax for backward (``4sbv``, Korthikanti et al. 2022, section 4.3);
    while it is computed the logits and their fp32 copy are alive too.
    DeepSpeed AutoTP leaves the embedding and the head whole on every rank
    (``memory.stage_params`` counts them unsplit), so the logits are whole
    too: ``tp`` divides nothing here. Classification heads produce a few
    numbers per sample: only the norm and head inputs count.
    """
    tokens = seq_len * micro_batch
    head = tokens * dims.hidden_size * (recipe.head * act_bytes + recipe.head_fp32 * FP32_BYTES)
    if task == "sequence-classification":
        return head
    logits = tokens * dims.vocab_size * (FP32_BYTES + act_bytes + FP32_BYTES)
    return head + logits


def saved_activation_bytes(
    recipe: Recipe,
    attention: str,
    dims: Dims,
    task: str,
    seq_len,
    micro_batch,
    act_bytes,
    checkpointing,
    device: str,
):
    """What autograd saves in one forward of the whole model on one device (no TP/PP).

    The quantity ``probe.measure_activations`` measures: no recompute working
    set and no loss transients (only the fp32 log-softmax is saved).
    """
    blocks = block_activation_bytes(
        recipe,
        attention,
        dims,
        seq_len,
        micro_batch,
        act_bytes,
        1,
        dims.num_layers,
        1,
        False,
        np.where(checkpointing == 2, 2, checkpointing),
        device,
        True,
    )
    parts = layer_parts(recipe, attention, dims, seq_len, micro_batch, act_bytes, device)
    working = np.where(checkpointing == 2, per_layer_bytes(parts, 1, False, 0), 0)
    tokens = seq_len * micro_batch
    head = tokens * dims.hidden_size * (recipe.head * act_bytes + recipe.head_fp32 * FP32_BYTES)
    loss = 0 if task == "sequence-classification" else tokens * dims.vocab_size * FP32_BYTES
    return blocks - working + head + loss
