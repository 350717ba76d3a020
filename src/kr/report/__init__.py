"""What a user reads: the summary `kr run` prints (tables) and `kr report`'s HTML/Markdown
page (document, figures)."""

from kr.report.document import write_report
from kr.report.tables import audit_table, summary_table

__all__ = ["audit_table", "summary_table", "write_report"]
