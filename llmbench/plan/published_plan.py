"""A published run planned at its published settings: the memory side of the evidence.

``published.py`` checks the step-time model against the published runs; this
module asks the planner whether each run fits where its authors ran it, with
the layer, loss and DeepSpeed settings of the stack that ran it
(``tests/test_plan_published.py``: the ZeRO-Offload showcase).
"""

from __future__ import annotations

from llmbench.plan.activations import MEGATRON_GPT2
from llmbench.plan.assumptions import Assumptions
from llmbench.plan.describe import describe_model
from llmbench.plan.memory import ZeroKnobs
from llmbench.plan.predict import Prediction, predict
from llmbench.plan.published import Run
from llmbench.plan.target import gpu_target


def plan_run(run: Run) -> Prediction:
    """The planner's memory verdict on a published run at its published settings.

    The model is the GPT-style network the row describes, built as llmbench's
    GPT-2 family (learned positions, tied head), with the layer and loss of the
    stack that ran it: Megatron-LM's (Korthikanti et al.'s layer, eager
    attention, one fp32 copy of the logits) for the Megatron and
    DeepSpeed-with-Megatron rows; DeepSpeed's ZeRO settings as the row gives them.
    """
    row = run.row
    if run.stack == "fsdp":
        raise ValueError(f"{run.id}: no memory recipe for the {run.stack} stack")
    model = describe_model(
        "gpt2-1.5b",
        overrides={
            "num_layers": row["layers"],
            "hidden_size": row["hidden"],
            "num_heads": row["heads"],
            "intermediate_size": row["ffn"],
            "vocab_size": row["vocab"],
            "max_positions": row["seq"],
        },
    )
    knobs = ZeroKnobs(**{k: row[k] for k in ("reduce_bucket_size",) if k in row})
    return predict(
        model,
        run.cfg,
        gpu_target(run.gpu, Assumptions(), gpus_per_node=min(int(run.cfg.world_size[0]), 16)),
        Assumptions(),
        knobs=knobs,
        attention="eager",
        dropout=row.get("dropout", 0.1),  # Megatron-LM's default hidden and attention dropout
        recipe=MEGATRON_GPT2,
    )
