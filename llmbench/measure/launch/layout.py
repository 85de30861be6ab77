"""How a case's ranks are spread over nodes, as the multi-node launchers need it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeLayout:
    """The same number of ranks on each of ``nodes`` nodes (scenario.py refuses uneven splits)."""

    nodes: int
    per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.per_node

    @classmethod
    def of(cls, nodes: int, world_size: int) -> NodeLayout:
        return cls(nodes=nodes, per_node=world_size // nodes)

    @classmethod
    def of_case(cls, case_dir: Path, world_size: int) -> NodeLayout:
        """From the task.json the runner wrote: Launcher.start is told the world size only."""
        spec = json.loads((case_dir / "task.json").read_text())["spec"]
        return cls.of(int(spec["parallel"]["nodes"]), world_size)
