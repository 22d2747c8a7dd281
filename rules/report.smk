# Aggregate tables and the HTML report (report engineer).
# Placeholder: the aggregate and report stages are added to xaipipe/pipeline.py and here
# once workflow_scripts/aggregate.py and workflow_scripts/report.py exist.
