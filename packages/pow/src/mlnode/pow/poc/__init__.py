"""PoC v2 maths (the network's Proof-of-Compute): seeds, inputs, artifacts, validation, decode.

Pure functions over torch tensors, free of vLLM, so the engine plugin (`mlnode.pow.engine`) and the
tests share one implementation of `SPEC.md` of the poc-v2 reference.
"""
