"""All settings of one MLNode process, composed from each package's settings class."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlnode.api.federation.settings import MetricsSettings
from mlnode.api.models.settings import ModelsSettings
from mlnode.common.settings import NodeSettings
from mlnode.common.transport.settings import TransportSettings
from mlnode.fuse.settings import FuseSettings
from mlnode.infer import InferSettings
from mlnode.pow.v1.settings import PowSettings
from mlnode.train.settings import TrainSettings


@dataclass
class MLNodeSettings:
    """Every package's settings; each part reads its own `MLNODE_*` prefix from env and `.env`."""

    node: NodeSettings = field(default_factory=NodeSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    pow: PowSettings = field(default_factory=PowSettings)
    fuse: FuseSettings = field(default_factory=FuseSettings)
    infer: InferSettings = field(default_factory=InferSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @classmethod
    def load(cls) -> MLNodeSettings:
        """Read every part from the environment and `.env`."""
        return cls()
