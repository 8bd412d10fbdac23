"""PoW v1 computation in plain torch and numpy: seeded model, inputs, permutations, distances.

Nothing here imports FastAPI or grpc; the service drives these functions from worker threads.
"""
