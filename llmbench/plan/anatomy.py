"""Parameter tensors of each family, written down as data, so presets are counted without torch.

Building a 7B model on the meta device costs ~3 s of imports (torch,
transformers) for numbers that follow from the dimensions alone. Each family
here lists the modules transformers 5 builds and the tensors each owns
directly; :func:`counts` derives from that list exactly what
``llmbench.define.models.count_parameters`` reads off a built model (checked for
every preset and task in ``tests/test_plan_anatomy.py``).

A new family adds one function that returns its :class:`Anatomy`; nothing
else in the planner changes. A mixture of experts marks its routed experts'
tensors, so memory counts all of them and compute (``flops_params``) only the
top-k a token passes through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmbench.define.models import Dims, ParamCounts
from llmbench.flops import active_expert_params


@dataclass(frozen=True)
class Module:
    """One module and the parameters it owns directly (not its children's)."""

    name: str
    params: tuple[int, ...]
    """element count of each parameter"""
    matrices: tuple[bool, ...]
    """whether each parameter has more than one dimension (a head's weight, not its bias)"""
    tied: tuple[bool, ...] = ()
    """whether each parameter is another module's tensor (a tied head): counted once"""
    embedding: bool = False
    """an ``nn.Embedding`` (lookups: no FLOPs, the embedding share of the counts)"""
    expert: bool = False
    """the routed experts of a MoE layer (transformers 5 fuses them into 3-D tensors)"""

    def is_tied(self, i: int) -> bool:
        return bool(self.tied) and self.tied[i]

    @property
    def direct(self) -> int:
        """What DeepSpeed sees as this module's size, tied tensors included."""
        return sum(self.params)


def linear(name: str, n_in: int, n_out: int, bias: bool = True) -> Module:
    params = (n_in * n_out, n_out) if bias else (n_in * n_out,)
    return Module(name, params, (True, False) if bias else (True,))


def norm(name: str, width: int, bias: bool = True) -> Module:
    return Module(name, (width, width) if bias else (width,), (False, False) if bias else (False,))


def embedding(name: str, rows: int, width: int) -> Module:
    return Module(name, (rows * width,), (True,), embedding=True)


@dataclass(frozen=True)
class Anatomy:
    """Modules before the blocks, one block (repeated), modules after, and the output head."""

    stem: tuple[Module, ...]
    block: tuple[Module, ...]
    num_layers: int
    tail: tuple[Module, ...]
    head: tuple[Module, ...]
    """the output projection (LM head) or classifier, as ``count_parameters`` finds it"""
    num_experts: int = 0
    experts_per_token: int = 0

    def modules(self) -> list[Module]:
        return [*self.stem, *self.block, *self.tail, *self.head]


def _classifier(dims: Dims, num_labels: int, bias: bool) -> Module:
    return linear("classifier", dims.hidden_size, num_labels, bias=bias)


def gpt2(dims: Dims, task: str, num_labels: int) -> Anatomy:
    h, f = dims.hidden_size, dims.intermediate_size
    head = (
        Module("lm_head", (dims.vocab_size * h,), (True,), tied=(True,))
        if task == "causal-lm"
        else _classifier(dims, num_labels, bias=False)
    )
    return Anatomy(
        stem=(embedding("wte", dims.vocab_size, h), embedding("wpe", dims.max_positions, h)),
        block=(
            norm("ln_1", h),
            linear("c_attn", h, 3 * h),
            linear("attn.c_proj", h, h),
            norm("ln_2", h),
            linear("c_fc", h, f),
            linear("mlp.c_proj", f, h),
        ),
        num_layers=dims.num_layers,
        tail=(norm("ln_f", h),),
        head=(head,),
    )


def _swiglu(prefix: str, h: int, f: int) -> tuple[Module, ...]:
    return tuple(
        linear(f"{prefix}{name}", n_in, n_out, bias=False)
        for name, n_in, n_out in (("gate_proj", h, f), ("up_proj", h, f), ("down_proj", f, h))
    )


def _decoder(dims: Dims, task: str, num_labels: int, mlp: tuple[Module, ...], qkv_bias: bool):
    """A Llama-style decoder (RMSNorm, RoPE, GQA) around the given MLP: Llama, Mistral, Qwen2, MoE."""
    h, kv = dims.hidden_size, dims.kv_heads * dims.head_dim
    if task == "causal-lm":
        tied = dims.tie_embeddings
        head = Module("lm_head", (dims.vocab_size * h,), (True,), tied=(tied,))
    else:
        head = _classifier(dims, num_labels, bias=False)
    return Anatomy(
        stem=(embedding("embed_tokens", dims.vocab_size, h),),
        block=(
            linear("q_proj", h, h, bias=qkv_bias),
            linear("k_proj", h, kv, bias=qkv_bias),
            linear("v_proj", h, kv, bias=qkv_bias),
            linear("o_proj", h, h, bias=False),
            *mlp,
            norm("input_layernorm", h, bias=False),
            norm("post_attention_layernorm", h, bias=False),
        ),
        num_layers=dims.num_layers,
        tail=(norm("norm", h, bias=False),),
        head=(head,),
        num_experts=dims.num_experts,
        experts_per_token=dims.experts_per_token,
    )


def llama(dims: Dims, task: str, num_labels: int) -> Anatomy:
    """Llama and Mistral: the same tensors (Mistral differs in attention span only)."""
    return _decoder(
        dims, task, num_labels, _swiglu("", dims.hidden_size, dims.intermediate_size), False
    )


def qwen2(dims: Dims, task: str, num_labels: int) -> Anatomy:
    """Llama's tensors plus biases on the query, key and value projections."""
    return _decoder(
        dims, task, num_labels, _swiglu("", dims.hidden_size, dims.intermediate_size), True
    )


def _experts(dims: Dims) -> tuple[Module, ...]:
    """The router and the routed experts: fused gate+up (E×2F×H) and down (E×H×F) tensors."""
    h, f, e = dims.hidden_size, dims.expert_width, dims.num_experts
    return (
        Module("gate", (e * h,), (True,)),
        Module("experts", (e * 2 * f * h, e * h * f), (True, True), expert=True),
    )


def mixtral(dims: Dims, task: str, num_labels: int) -> Anatomy:
    return _decoder(dims, task, num_labels, _experts(dims), False)


def qwen2_moe(dims: Dims, task: str, num_labels: int) -> Anatomy:
    """Routed experts plus one always-on shared expert with a sigmoid gate; QKV biases."""
    h = dims.hidden_size
    shared = (
        *_swiglu("shared_expert.", h, dims.shared_expert_intermediate_size),
        linear("shared_expert_gate", h, 1, bias=False),
    )
    return _decoder(dims, task, num_labels, (*_experts(dims), *shared), True)


def _encoder_block(h: int, f: int) -> tuple[Module, ...]:
    """BERT and DistilBERT layers own the same tensors under different names."""
    return (
        linear("query", h, h),
        linear("key", h, h),
        linear("value", h, h),
        linear("attention_out", h, h),
        norm("attention_norm", h),
        linear("intermediate", h, f),
        linear("output", f, h),
        norm("output_norm", h),
    )


def _mlm_head(name: str, dims: Dims, bias_tied: bool) -> Module:
    """A decoder tied to the word embeddings, with a vocabulary-sized bias.

    BERT's decoder bias is ``cls.predictions.bias`` (a tensor its parent owns
    too); DistilBERT's projector owns its bias alone.
    """
    v, h = dims.vocab_size, dims.hidden_size
    return Module(name, (v * h, v), (True, False), tied=(True, bias_tied))


def bert(dims: Dims, task: str, num_labels: int) -> Anatomy:
    h, f = dims.hidden_size, dims.intermediate_size
    if task == "masked-lm":
        tail: tuple[Module, ...] = (
            Module("predictions", (dims.vocab_size,), (False,)),
            linear("transform", h, h),
            norm("transform_norm", h),
        )
        head = _mlm_head("decoder", dims, bias_tied=True)
    else:
        tail, head = (linear("pooler", h, h),), _classifier(dims, num_labels, bias=True)
    return Anatomy(
        stem=(
            embedding("word_embeddings", dims.vocab_size, h),
            embedding("position_embeddings", dims.max_positions, h),
            embedding("token_type_embeddings", 2, h),
            norm("embeddings_norm", h),
        ),
        block=_encoder_block(h, f),
        num_layers=dims.num_layers,
        tail=tail,
        head=(head,),
    )


def distilbert(dims: Dims, task: str, num_labels: int) -> Anatomy:
    h, f = dims.hidden_size, dims.intermediate_size
    if task == "masked-lm":
        tail: tuple[Module, ...] = (linear("vocab_transform", h, h), norm("vocab_layer_norm", h))
        head = _mlm_head("vocab_projector", dims, bias_tied=False)
    else:
        tail, head = (linear("pre_classifier", h, h),), _classifier(dims, num_labels, bias=True)
    return Anatomy(
        stem=(
            embedding("word_embeddings", dims.vocab_size, h),
            embedding("position_embeddings", dims.max_positions, h),
            norm("embeddings_norm", h),
        ),
        block=_encoder_block(h, f),
        num_layers=dims.num_layers,
        tail=tail,
        head=(head,),
    )


ANATOMIES: dict[str, Callable[[Dims, str, int], Anatomy]] = {
    "gpt2": gpt2,
    "llama": llama,
    "bert": bert,
    "distilbert": distilbert,
    "mistral": llama,
    "qwen2": qwen2,
    "mixtral": mixtral,
    "qwen2_moe": qwen2_moe,
}


@dataclass(frozen=True)
class Counted:
    """Everything the planner reads off a model's parameters."""

    counts: ParamCounts
    largest_module_params: int
    tensor_numels: tuple[int, ...]
    """every distinct parameter tensor's element count, largest first"""


def count(anatomy: Anatomy) -> Counted:
    """The counts ``count_parameters`` would read off the built model, from the anatomy alone."""
    layers = anatomy.num_layers
    distinct: list[int] = []
    for modules, times in (
        (anatomy.block, layers),
        ((*anatomy.stem, *anatomy.tail, *anatomy.head), 1),
    ):
        for module in modules:
            distinct += [n for i, n in enumerate(module.params) if not module.is_tied(i)] * times
    embedding = sum(sum(m.params) for m in anatomy.stem if m.embedding)
    head_modules = anatomy.head
    head = sum(n for m in head_modules for n, mat in zip(m.params, m.matrices, strict=True) if mat)
    head_tied = any(
        m.is_tied(i) and m.matrices[i] for m in head_modules for i in range(len(m.params))
    )
    total = sum(distinct)
    expert = sum(sum(m.params) for m in anatomy.block if m.expert)
    active = active_expert_params(expert, anatomy.num_experts, anatomy.experts_per_token)
    counts = ParamCounts(
        total=total,
        embedding=embedding,
        head=head,
        head_tied=head_tied,
        non_embedding=total - embedding,
        per_layer=sum(m.direct for m in anatomy.block),
        num_layers=layers,
        expert=expert * layers,
        expert_active=active * layers,
    )
    return Counted(
        counts=counts,
        largest_module_params=max(m.direct for m in anatomy.modules()),
        tensor_numels=tuple(sorted(distinct, reverse=True)),
    )


def counted(family: str, dims: Dims, task: str, num_labels: int = 2) -> Counted:
    """Counts of a family's model with these dimensions (KeyError: no anatomy for the family)."""
    return count(ANATOMIES[family](dims, task, num_labels))
