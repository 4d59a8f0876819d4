"""gui package of VED."""
