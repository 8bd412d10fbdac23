"""`GET /api/v1/metrics`: gonka's MLNode metrics schema v1, for the network node's federation."""
