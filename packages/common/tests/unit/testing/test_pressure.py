"""The attack watch's arithmetic and its RSS accounting of process trees."""

import math
import os
import subprocess
import sys

from mlnode.common.testing.pressure import percentile, tree_rss


def test_percentile_is_nearest_rank_and_empty_is_infinite() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert (percentile(samples, 99), percentile(samples, 50), percentile([3.0], 99)) == (
        99.0,
        50.0,
        3.0,
    )
    assert percentile([], 99) == math.inf


def test_tree_rss_counts_children_but_not_skipped_subtrees() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        whole, alone = tree_rss(os.getpid()), tree_rss(os.getpid(), skip=[child.pid])
        assert whole > alone > 0
        assert tree_rss(child.pid) > 0 and tree_rss(os.getpid(), skip=[os.getpid()]) == 0
    finally:
        child.kill()
        child.wait()
