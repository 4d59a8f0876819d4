"""train package of VED."""
