"""What mlnode-pow publishes for vLLM and for infer, read back through the installed metadata."""

from importlib.metadata import entry_points

from mlnode.pow.engine.plugin import PocEndpointPlugin
from mlnode.pow.engine.protocol import RPC_DESCRIBE, RPC_VECTORS
from mlnode.pow.engine.testing import DeterministicPocWorker
from mlnode.pow.engine.worker import WORKER_EXTENSION, PocWorkerExtension


def test_the_worker_extension_entry_point_is_the_class_the_plugin_expects() -> None:
    (published,) = entry_points(group="mlnode.vllm_worker_extensions", name="mlnode_pow")
    assert published.load() is PocWorkerExtension
    assert f"{published.module}.{published.attr}" == WORKER_EXTENSION


def test_the_endpoint_plugin_entry_point_loads() -> None:
    (published,) = entry_points(group="vllm.endpoint_plugins", name="mlnode_pow")
    assert published.load() is PocEndpointPlugin


def test_the_worker_stand_in_answers_a_subset_of_the_worker_extension() -> None:
    (published,) = entry_points(group="mlnode.testing.worker_extensions", name="mlnode_pow")
    stand_in = published.load()
    assert stand_in is DeterministicPocWorker
    answered = {name for name in vars(stand_in) if name.startswith("mlnode_poc_")}
    assert answered == {RPC_DESCRIBE, RPC_VECTORS}
    assert all(callable(getattr(PocWorkerExtension, name)) for name in answered)
