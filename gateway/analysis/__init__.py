"""Experiment analysis: outcome records and labels in, a report (JSON, text, HTML) out.

`report.analyze` / `report.build_report` compute the report dict (docs/analysis.md);
`text_report.render_text` and `html_report.render_html` render it; `model` holds the
options and experiment facts it takes.
"""

from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.analysis.report import analyze, build_report
from gateway.analysis.text_report import render_text

__all__ = ["AnalysisOptions", "ExperimentInfo", "analyze", "build_report", "render_text"]
