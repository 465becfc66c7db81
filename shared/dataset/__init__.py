"""Pure dataset handling: streaming validation, stats, duplicate detection, split and report.

Nothing here does I/O beyond iterating the byte chunks it is given (``validate_path`` opens a
local file for the CLI). Memory is independent of file size except one small digest per
distinct example (duplicate detection).
"""

from shared.dataset.codes import ERROR_CODES, WARNING_CODES
from shared.dataset.config import ValidationConfig
from shared.dataset.report import SCHEMA, DatasetInfo, Issue, ValidationReport
from shared.dataset.split import (
    Bucket,
    SplitCounts,
    SplitInputError,
    bucket_of,
    example_digest,
    split_stream,
    split_to,
)
from shared.dataset.validate import validate_path, validate_stream

__all__ = [
    "ERROR_CODES",
    "SCHEMA",
    "WARNING_CODES",
    "Bucket",
    "DatasetInfo",
    "Issue",
    "SplitCounts",
    "SplitInputError",
    "ValidationConfig",
    "ValidationReport",
    "bucket_of",
    "example_digest",
    "split_stream",
    "split_to",
    "validate_path",
    "validate_stream",
]
