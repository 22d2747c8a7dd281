"""Explanations: attribution maps, feature visualisation, undesirable pixels, sanity checks."""
