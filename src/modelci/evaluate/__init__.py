"""Head against base: running both sides, per-metric verdicts, bootstrap intervals
and the reports (table, Markdown, JSON)."""
