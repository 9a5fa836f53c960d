"""The parsing half of ``leadctl ingest``: a lead file in, a stream of Lead | Reject out.

``parse_leads(path, ParseOptions(...))`` reads CSV, TSV, JSON or NDJSON (gzipped or not, '-' for
stdin), maps Portuguese and English headers, normalises phones to E.164 and emails, and yields one
Lead or one Reject (with a stable ``Code``) per data row. ``RejectsWriter`` saves the rejects as a
spreadsheet-safe CSV.
"""

from leadctl.ingest.parse import ParseOptions, parse_leads
from leadctl.ingest.rejects import Code, RejectsWriter, safe_cell

__all__ = ["Code", "ParseOptions", "RejectsWriter", "parse_leads", "safe_cell"]
