"""Experiment analysis: outcome records and labels in, a report (JSON, text, HTML) out.

`report.analyze` / `report.build_report` compute the report dict (docs/analysis.md);
`text_report.render_text` and `html_report.render_html` render it; `model` holds the
options and experiment facts it takes. The package itself imports nothing, so that a command
that needs one light module (the options, say) does not load the statistics stack.
"""
