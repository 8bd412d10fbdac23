"""Model management (network-node contract N10-N14) over the Hugging Face cache on this host."""
