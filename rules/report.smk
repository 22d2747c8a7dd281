# Aggregate tables and the self-contained HTML report (results/report/index.html).
stage_rule("aggregate")
stage_rule("report")
