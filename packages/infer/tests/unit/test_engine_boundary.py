"""The forcing plugin imports only what an engine's interpreter has (`common.engine_safe`)."""

from mlnode.common.testing.imports import walk_engine_imports


def test_the_forcing_plugin_reaches_only_engine_side_modules() -> None:
    walk = walk_engine_imports(["mlnode.infer.forcing.plugin"])
    assert walk.violations == {}
    assert "mlnode.infer.forcing.protocol" in walk.reached


def test_the_node_side_of_infer_is_not_engine_safe() -> None:
    walk = walk_engine_imports(["mlnode.infer.service"])
    assert "mlnode.common.lifecycle" in walk.violations["mlnode.infer.service"]
