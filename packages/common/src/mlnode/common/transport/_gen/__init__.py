"""Code generated from proto/tensor.proto by `make proto`; do not edit."""
