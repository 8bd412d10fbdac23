"""DiLoCo maths and round orchestration; imports neither FastAPI nor grpc."""
