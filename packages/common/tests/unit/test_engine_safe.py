"""common's engine-safe modules import the standard library, httpx and one another only."""

from mlnode.common.engine_safe import ENGINE_SAFE_COMMON
from mlnode.common.testing.imports import walk_engine_imports


def test_the_engine_safe_modules_need_nothing_an_engine_lacks() -> None:
    walk = walk_engine_imports(ENGINE_SAFE_COMMON)
    assert walk.violations == {}
    assert walk.reached == set(ENGINE_SAFE_COMMON)


def test_a_module_with_node_only_imports_is_not_engine_safe() -> None:
    walk = walk_engine_imports(["mlnode.common.context"])
    assert {"prometheus_client", "mlnode.common.lifecycle"} <= walk.violations[
        "mlnode.common.context"
    ]
