"""All settings of one MLNode process, composed from each package's settings class."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlnode.common.settings import NodeSettings
from mlnode.common.transport.settings import TransportSettings
from mlnode.train.settings import TrainSettings


@dataclass
class MLNodeSettings:
    """Every package's settings; each part reads its own `MLNODE_*` prefix from env and `.env`."""

    node: NodeSettings = field(default_factory=NodeSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    @classmethod
    def load(cls) -> MLNodeSettings:
        """Read every part from the environment and `.env`."""
        return cls()
