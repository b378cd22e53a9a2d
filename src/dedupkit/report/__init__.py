"""HTML report (``dedupkit report``) and terminal inspection (``dedupkit inspect``) of finished runs.

Heavy parts (jinja2) load only when a report is written.
"""

from dedupkit.report.html import ReportOptions, ReportResult, build_report

__all__ = ["ReportOptions", "ReportResult", "build_report"]
