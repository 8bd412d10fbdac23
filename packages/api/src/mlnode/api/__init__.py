"""The MLNode server: one FastAPI app mounting every router; node state; entry point."""
