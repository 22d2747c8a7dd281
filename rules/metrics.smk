# SCG/CCG, ground-truth localisation, the metric validation on oracle maps and
# feature-visualisation metrics.
# Each stage_rule() defines one rule from the stage list in xaipipe/pipeline.py
# (rules/common.smk); the rule is named after the stage.

stage_rule("confidence_gain")
stage_rule("localisation")
stage_rule("localisation_untrained")
stage_rule("metric_validation")
stage_rule("featvis_metrics")
