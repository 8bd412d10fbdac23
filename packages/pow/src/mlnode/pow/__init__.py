"""Proof-of-Work compatible with the network's PoW v1."""
