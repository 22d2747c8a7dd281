# ROAR/KAR remove-and-retrain, ROAD and their summary.
# Each stage_rule() defines one rule from the stage list in xaipipe/pipeline.py
# (rules/common.smk); the rule is named after the stage.

stage_rule("roar")
stage_rule("road")
stage_rule("roar_summary")
