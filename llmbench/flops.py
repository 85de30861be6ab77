"""FLOPs per trained token: the formulas behind MFU, shared by measure and plan.

One definition, so the MFU a run reports and the throughput the planner
predicts count the same work.
"""

from __future__ import annotations


def training_flops_per_token(
    flops_params: int, num_layers: int, hidden_size: int, seq_len: int
) -> float:
    """Model FLOPs per token of a training step: 6·N + 12·L·H·Q·T.

    PaLM (Chowdhery et al. 2022), appendix B: 6N for the forward and backward
    matmuls over N weights, plus 12·L·H·Q·T for attention scores and values
    (H heads of size Q, so H·Q = hidden size, over sequence length T).
    For a mixture of experts N is the active parameters (``active_expert_params``).
    """
    return 6.0 * flops_params + 12.0 * num_layers * hidden_size * seq_len


def active_expert_params(expert_params: int, num_experts: int, top_k: int) -> int:
    """Routed-expert weights one token multiplies with: its top-k experts out of ``num_experts``.

    Mixtral and Qwen2-MoE route every token to exactly ``top_k`` experts of
    equal size (no capacity limit drops tokens in transformers' implementation),
    so a token's expert FLOPs are those of k experts, whichever they are.
    """
    if not expert_params:
        return 0
    if expert_params % num_experts:
        raise ValueError(f"{expert_params} expert parameters do not split into {num_experts}")
    return expert_params // num_experts * top_k


def recompute_flops_per_token(
    flops_params: int, num_layers: int, hidden_size: int, seq_len: int, checkpointing: str
) -> float:
    """Extra FLOPs per token that activation recomputation adds (hardware, not model, FLOPs).

    Full checkpointing reruns the whole forward: 2·N + 4·L·H·Q·T. Selective
    recomputation (Korthikanti et al. 2022) reruns only the attention core:
    4·L·H·Q·T.
    """
    attention_forward = 4.0 * num_layers * hidden_size * seq_len
    if checkpointing == "full":
        return 2.0 * flops_params + attention_forward
    if checkpointing == "selective":
        return attention_forward
    return 0.0
