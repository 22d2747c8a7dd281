"""Data stages: VOC download, synthetic generator, index, variants and the tensor store."""
