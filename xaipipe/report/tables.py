"""The names of the aggregate stage's tables, ``results/report/<name>.csv`` in this order.

Kept apart from :mod:`xaipipe.report.aggregate` (which reads pandas, the stage table and every
result) so the stage table can declare the outputs without importing any of that."""

TABLES = ("effects", "intervals", "model_contrast", "model_contrast_points", "metric_agreement",
          "table1", "quality", "confidence_gain", "phi", "metric_validation", "localisation",
          "sanity", "roar_scores", "road_scores", "featvis_metrics", "sources")
