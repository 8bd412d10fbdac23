"""Weight-space fusion of independently trained models."""
