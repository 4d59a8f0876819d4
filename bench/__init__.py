"""bench package of VED."""
