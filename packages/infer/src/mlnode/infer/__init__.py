"""vLLM engine lifecycle and the OpenAI-compatible proxy."""
