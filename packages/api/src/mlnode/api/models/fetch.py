"""`python -m mlnode.api.models.fetch REPO REVISION CACHE WORKERS`: one snapshot download.

Run as a child process so that a download can be cancelled (killed) at any point; what it
leaves behind is what `HubCache` reads as PARTIAL.
"""

from __future__ import annotations

import sys

from huggingface_hub import snapshot_download


def main(argv: list[str]) -> int:
    """Download the snapshot; the error's type and text on stderr when it fails."""
    repo, revision, cache_dir, workers = argv
    try:
        snapshot_download(repo, revision=revision, cache_dir=cache_dir, max_workers=int(workers))
    except Exception as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
