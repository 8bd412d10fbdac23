"""`python -m mlnode.api` serves the node, like `mlnode serve`."""

from mlnode.api.cli import app

app(["serve"])
