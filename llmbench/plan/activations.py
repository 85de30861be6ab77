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

Dropout masks are kept only when dropout is on: a recipe names where the
architecture drops out, and ``dropout`` (the probability the case trains with,
``model.dropout``: the config's own by default, GPT-2 and BERT 0.1, Llama 0)
decides whether those masks exist. Flash / memory-efficient attention on a GPU
regenerates its dropout mask from the RNG state in backward and keeps none.
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
    loss_fp32_copies: int = 2
    """fp32 tensors of logits size alive while the loss runs, beside the low-precision
    logits: transformers upcasts the logits and keeps the fp32 log-softmax (2);
    Megatron-LM's vocab-parallel cross entropy upcasts once and computes the softmax
    and then its gradient in place in that copy (1)."""


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

# Megatron-LM's GPT-2 (as DeepSpeedExamples ran it for ZeRO-Offload): the paper's
# layer, and a loss that keeps one fp32 copy of the logits. Megatron-LM
# mpu/cross_entropy.py (_VocabParallelCrossEntropy): ``output.float()`` is the one
# fp32 copy; max-subtraction, exp and normalisation are done in place in it, it is
# saved for backward and the gradient is written into it (``grad_input = softmax``).
MEGATRON_GPT2 = replace(
    PAPER,
    name="megatron-gpt2",
    loss_fp32_copies=1,
    source="Korthikanti et al. 2022, section 4.1; loss: Megatron-LM's vocab-parallel cross "
    "entropy (one fp32 copy of the logits, softmax and gradient in place)",
)

# Counted from transformers 5 with the saved-tensor probe, as llmbench builds
# the models. Dropout sites: GPT-2 drops out after the embedding (embd_pdrop),
# after the attention and MLP output projections (resid_pdrop) and on the
# attention probabilities (attn_pdrop). GPT-2's gelu_new is written out in
# Python and keeps four intermediate-sized tensors where a fused GeLU keeps one.
GPT2 = Recipe(
    name="gpt2",
    outside=4,
    outside_fp32=0,
    outside_masks=2,
    inside=2,
    inside_kv=2,
    mlp=5,
    softmax_fp32=False,
    attention_dropout=True,
    embed_masks=1,
    checkpointed_mask=True,
    head=2,
    head_fp32=0,
    source="transformers 5 GPT2Model, counted with llmbench.plan.probe.measure_activations",
)
# Llama: each RMSNorm keeps its fp32 upcast input plus its normalised and
# weighted outputs; SwiGLU keeps gate, up, silu(gate) and their product. Its
# only dropout is on the attention probabilities (attention_dropout, 0 by default).
LLAMA = Recipe(
    name="llama",
    outside=4,
    outside_fp32=2,
    outside_masks=0,
    inside=2,
    inside_kv=2,
    mlp=4,
    softmax_fp32=True,
    attention_dropout=True,
    embed_masks=0,
    checkpointed_mask=False,
    head=2,
    head_fp32=1,
    source="transformers 5 LlamaModel, counted with llmbench.plan.probe.measure_activations",
)
# BERT and DistilBERT (post-LN, exact GeLU, the paper's dropout sites): the
# paper's count. Not checked with the probe.
BERT = replace(
    PAPER,
    name="bert",
    source="Korthikanti et al. 2022; not checked with the probe",
)
# Mistral, Qwen2 and the MoE families save what a Llama layer saves (assumed, not
# probed); a MoE token's MLP tensors are those of its top-k experts (active_mlp_width).
RECIPES = {
    "gpt2": GPT2,
    "llama": LLAMA,
    "bert": BERT,
    "distilbert": BERT,
    **dict.fromkeys(("mistral", "qwen2", "mixtral", "qwen2_moe"), LLAMA),
}

# The dropout probability each family's transformers config class defaults to
# (what ``model.dropout: config`` trains with): GPT2Config resid/embd/attn_pdrop
# 0.1, BertConfig hidden/attention_probs_dropout_prob 0.1, DistilBertConfig
# dropout/attention_dropout 0.1, LlamaConfig attention_dropout 0.0.
CONFIG_DROPOUT = {"gpt2": 0.1, "bert": 0.1, "distilbert": 0.1, "llama": 0.0}
CONFIG_DROPOUT.update(dict.fromkeys(("mistral", "qwen2", "mixtral", "qwen2_moe"), 0.0))


def dropout_probability(family: str, dropout: float | str) -> float:
    """The probability a case with ``model.dropout = dropout`` trains with."""
    return CONFIG_DROPOUT[family] if dropout == "config" else float(dropout)


def mask_bytes(device: str, act_bytes):
    """CUDA dropout keeps a bool mask; the CPU kernel keeps it in the activation dtype."""
    return 1 if device == "cuda" else act_bytes


def sdpa_math(attention: str, device: str, dropout: float) -> bool:
    """Whether SDPA falls back to PyTorch's math implementation: on a CPU with dropout on.

    The CPU flash kernel has no dropout; the math path upcasts queries, keys and
    values to fp32, repeats grouped keys and values to every head and keeps the
    fp32 softmax, its dropout mask and the dropped probabilities (measured with
    the probe on gpt2/llama tiny, bf16 and fp32: exact to the tensor). On a GPU
    flash and memory-efficient attention apply dropout inside the kernel.
    """
    return attention != "eager" and device == "cpu" and dropout > 0


def attention_core_bytes(
    recipe: Recipe,
    attention: str,
    dims: Dims,
    seq_len,
    micro_batch,
    act_bytes,
    device: str,
    dropout: float = 0.0,
):
    """Bytes of the attention core (softmax and its dropout), what selective recompute drops.

    Flash / memory-efficient SDPA keeps only a fp32 log-sum-exp per head and
    position; eager attention keeps heads × seq² probabilities, and with
    dropout on its mask and the dropped probabilities too.
    """
    heads_tokens = dims.num_heads * seq_len * micro_batch
    dropping = recipe.attention_dropout and dropout > 0
    if sdpa_math(attention, device, dropout):
        return 3 * FP32_BYTES * heads_tokens * seq_len
    if attention != "eager":
        return FP32_BYTES * heads_tokens
    if recipe.softmax_fp32:
        # the low-precision cast of the fp32 softmax is kept by the next matmul,
        # unless dropout consumes it (then the mask and the dropped copy are kept)
        cast = 0 if dropping else np.where(act_bytes < FP32_BYTES, act_bytes, 0)
        per = FP32_BYTES + cast
    else:
        per = act_bytes
    if dropping:
        per = per + mask_bytes(device, act_bytes) + act_bytes
    return per * heads_tokens * seq_len


@dataclass(frozen=True)
class LayerParts:
    """One layer's saved bytes for one micro-batch, split the way TP/SP/recompute act on them."""

    outside: object
    inside: object
    core: object


def layer_parts(
    recipe: Recipe,
    attention: str,
    dims: Dims,
    seq_len,
    micro_batch,
    act_bytes,
    device: str,
    dropout: float = 0.0,
) -> LayerParts:
    tokens = seq_len * micro_batch
    h, f = dims.hidden_size, dims.active_mlp_width
    math = sdpa_math(attention, device, dropout)
    kv_share = 1 if attention == "eager" or math else dims.kv_heads / dims.num_heads
    m = mask_bytes(device, act_bytes) * (dropout > 0)
    # the math path keeps fp32 copies of the queries (one of ``inside``), keys and values
    qkv_bytes = FP32_BYTES if math else act_bytes
    outside = (
        tokens
        * h
        * (recipe.outside * act_bytes + recipe.outside_fp32 * FP32_BYTES + recipe.outside_masks * m)
    )
    inside = tokens * (
        h * act_bytes * (recipe.inside - 1)
        + h * qkv_bytes * (1 + recipe.inside_kv * kv_share)
        + f * act_bytes * recipe.mlp
    )
    core = attention_core_bytes(
        recipe, attention, dims, seq_len, micro_batch, act_bytes, device, dropout
    )
    return LayerParts(outside=outside, inside=inside, core=core)


def per_layer_bytes(parts: LayerParts, tp, sequence_parallel, checkpointing):
    """Bytes one layer keeps for one micro-batch on one GPU (Korthikanti et al. 2022, table 2).

    ``checkpointing``: 0 none, 1 selective (attention core recomputed), 2 full
    (only the layer input is kept; see :func:`stage_activation_bytes`).
    """
    outside = np.where(sequence_parallel, parts.outside / tp, parts.outside)
    core = np.where(checkpointing == 1, 0, parts.core / tp)
    return outside + parts.inside / tp + core


def checkpoint_bytes(dims: Dims, seq_len, micro_batch, act_bytes, tp, sequence_parallel):
    """One layer input kept by full recomputation for one micro-batch (``2sbh`` in 16 bits)."""
    tokens_h = seq_len * micro_batch * dims.hidden_size
    return tokens_h * act_bytes / np.where(sequence_parallel, tp, 1)


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
    dropout: float = 0.0,
    cpu_checkpointing=False,
):
    """Activations of ``layers`` blocks for ``in_flight`` micro-batches on one GPU.

    With full recomputation each layer keeps its input (``2sbh`` with 16-bit
    activations), and the layer being recomputed briefly holds everything
    ``per_layer_bytes`` would. With ``cpu_checkpointing`` (DeepSpeed's
    ``activation_checkpointing.cpu_checkpointing``) those inputs live in host
    memory instead (:func:`host_checkpoint_bytes`) and come back one layer at
    a time, inside the working layer. ``embedding``: this stage runs the
    embedding (first pipeline stage), whose dropout mask is kept too, as is
    the attention mask checkpointed layers share.
    """
    parts = layer_parts(recipe, attention, dims, seq_len, micro_batch, act_bytes, device, dropout)
    layer = per_layer_bytes(
        parts, tp, sequence_parallel, np.where(checkpointing == 2, 0, checkpointing)
    )
    layer_input = checkpoint_bytes(dims, seq_len, micro_batch, act_bytes, tp, sequence_parallel)
    on_device = np.where(np.asarray(cpu_checkpointing, dtype=bool), 0, layer_input)
    stored = np.where(checkpointing == 2, on_device, layer)
    working = np.where(checkpointing == 2, layer, 0)
    embed_masks = recipe.embed_masks * (dropout > 0)
    tokens_h = seq_len * micro_batch * dims.hidden_size
    embed = np.where(embedding, tokens_h * embed_masks * mask_bytes(device, act_bytes), 0)
    if recipe.checkpointed_mask and attention == "eager":
        embed = embed + np.where(checkpointing == 2, micro_batch * seq_len**2 * act_bytes, 0)
    return in_flight * (layers * stored + embed) + working


def host_checkpoint_bytes(
    dims: Dims,
    seq_len,
    micro_batch,
    act_bytes,
    tp,
    layers,
    in_flight,
    sequence_parallel,
    checkpointing,
    cpu_checkpointing,
):
    """Host memory per GPU that ``cpu_checkpointing`` fills: every checkpointed layer input.

    DeepSpeed (runtime/activation_checkpointing/checkpointing.py) copies each
    checkpointed input to the CPU in forward (into preallocated buffers with
    ``contiguous_memory_optimization``) and back to the GPU in backward.
    """
    layer_input = checkpoint_bytes(dims, seq_len, micro_batch, act_bytes, tp, sequence_parallel)
    on_host = np.asarray(cpu_checkpointing, dtype=bool) & (checkpointing == 2)
    return np.where(on_host, in_flight * layers * layer_input, 0)


def logits_loss_bytes(recipe: Recipe, dims: Dims, task: str, seq_len, micro_batch, act_bytes):
    """After the last block: final norm and head inputs, the logits and the loss.

    A language-model loss upcasts the logits to fp32; transformers then keeps
    the fp32 log-softmax for backward (``4sbv``, Korthikanti et al. 2022,
    section 4.3), so while it is computed the logits, their fp32 copy and the
    log-softmax are alive; Megatron-LM works in the one fp32 copy
    (``recipe.loss_fp32_copies``). DeepSpeed AutoTP leaves the embedding and
    the head whole on every rank (``memory.stage_params`` counts them
    unsplit), so the logits are whole too: ``tp`` divides nothing here.
    Classification heads produce a few numbers per sample: only the norm and
    head inputs count.
    """
    tokens = seq_len * micro_batch
    head = tokens * dims.hidden_size * (recipe.head * act_bytes + recipe.head_fp32 * FP32_BYTES)
    if task == "sequence-classification":
        return head
    logits = tokens * dims.vocab_size * (act_bytes + recipe.loss_fp32_copies * FP32_BYTES)
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
    dropout: float = 0.0,
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
        dropout,
    )
    parts = layer_parts(recipe, attention, dims, seq_len, micro_batch, act_bytes, device, dropout)
    working = np.where(checkpointing == 2, per_layer_bytes(parts, 1, False, 0), 0)
    tokens = seq_len * micro_batch
    head = tokens * dims.hidden_size * (recipe.head * act_bytes + recipe.head_fp32 * FP32_BYTES)
    loss = 0 if task == "sequence-classification" else tokens * dims.vocab_size * FP32_BYTES
    return blocks - working + head + loss
