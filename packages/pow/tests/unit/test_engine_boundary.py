"""The PoC engine plugin imports only what an engine's interpreter has (`common.engine_safe`)."""

from mlnode.common.testing.imports import walk_engine_imports

ENTRY_MODULES = ("mlnode.pow.engine.plugin", "mlnode.pow.engine.worker")


def test_the_engine_plugin_reaches_only_engine_side_modules() -> None:
    walk = walk_engine_imports(ENTRY_MODULES)
    assert walk.violations == {}
    # The walk went through the plugin's own modules and common's engine-safe ones.
    assert {"mlnode.pow.engine.runner", "mlnode.pow.poc.validation"} <= walk.reached
    assert {"mlnode.common.errors", "mlnode.common.settings"} <= walk.reached


def test_a_node_only_import_is_caught() -> None:
    # PowService holds node-side state (the PoW v1 workers, the fan-out): never engine-side.
    walk = walk_engine_imports(["mlnode.pow.v1.service"])
    assert "mlnode.common.lifecycle" in walk.violations["mlnode.pow.v1.service"]
    assert "psutil" in walk.violations["mlnode.pow.v1.service"]
