"""Models of VED: labels, features, architectures, registry, checkpoint bundles.

Importing this package is cheap: torch and friends load lazily inside the
modules that need them, so `gui/` can import `models.labels` safely.
"""
