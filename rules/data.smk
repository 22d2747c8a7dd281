# Dataset source (VOC download or synthetic generator), index and per-variant tensor stores.
# Each stage_rule() defines one rule from the stage list in xaipipe/pipeline.py
# (rules/common.smk); the rule is named after the stage.

stage_rule("download_voc")
stage_rule("make_synthetic")
stage_rule("index")
stage_rule("variant")
