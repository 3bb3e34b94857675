"""Operations: health checks, the healing rule, incidents and housekeeping (issue 11).

:mod:`m1lib.ops.report` holds the vocabulary every part shares: a check's result and the report.
"""
