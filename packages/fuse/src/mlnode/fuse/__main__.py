"""`python -m mlnode.fuse config.yaml`."""

from mlnode.fuse.cli import main

raise SystemExit(main())
