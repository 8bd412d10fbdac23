"""Reading models tensor by tensor (local files, peers) and writing sharded checkpoints."""
