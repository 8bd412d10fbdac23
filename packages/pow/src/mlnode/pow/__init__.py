"""Proof-of-Work v1 (`v1`) and PoC v2 end to end (`poc` maths, `engine` plugin, `fanout`)."""
