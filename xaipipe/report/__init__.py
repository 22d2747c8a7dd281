"""Aggregation of every stage's numbers into tables, figures and the HTML report."""
