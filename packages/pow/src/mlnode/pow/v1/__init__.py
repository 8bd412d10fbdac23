"""PoW v1, the older network nodes' Proof-of-Work: seeded model, nonce search, batch validation."""
