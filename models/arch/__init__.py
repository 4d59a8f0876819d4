"""Trainable architectures (registry factories)."""
