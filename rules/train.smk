# Training: one model per variant plus the independently seeded reference model.
# Each stage_rule() defines one rule from the stage list in xaipipe/pipeline.py
# (rules/common.smk); the rule is named after the stage.

stage_rule("train")
stage_rule("train_reference")
