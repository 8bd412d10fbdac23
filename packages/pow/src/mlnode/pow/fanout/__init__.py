"""PoC v2 on the node side: the network node's `/api/v1/inference/pow/*` fanned out to the engines.

The proof itself is computed inside each engine (`mlnode.pow.engine`, maths in `mlnode.pow.poc`);
this package only spreads the calls over the instances that infer serves (`ServingEngines`).
"""
