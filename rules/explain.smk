# Attribution maps, feature visualisation, undesirable pixels and sanity checks.
# Each stage_rule() defines one rule from the stage list in xaipipe/pipeline.py
# (rules/common.smk); the rule is named after the stage.

stage_rule("attribute")
stage_rule("featvis")
stage_rule("undesirable")
stage_rule("sanity")
