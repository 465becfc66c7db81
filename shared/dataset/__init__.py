"""Pure dataset handling: streaming validation, stats, duplicate detection, split and report.

Nothing here does I/O beyond iterating the byte chunks it is given (``validate_path`` opens a
local file for the CLI). Memory is independent of file size except duplicate detection: about
130 bytes per distinct example (a 64-bit identity and a line number in a dict).

Public API:

* ``validate_stream(chunks, *, name, config) -> ValidationReport`` — chunks of any sizes;
  SHA-256 and byte count of the whole input come with the report (``report.dataset``).
* ``validate_path(path, *, config)`` — the same for a local file; raises
  ``DatasetUnreadableError`` for a missing, unreadable or directory path.
* ``ValidationConfig`` (``from_settings(settings)``), ``ValidationReport`` (immutable:
  ``with_split(dict)`` returns a copy; ``to_dict``/``to_json``/``to_markdown``,
  ``from_dict``/``from_json``), ``DatasetInfo``, ``Issue``, ``ERROR_CODES``/``WARNING_CODES``
  (code → meaning).
* ``split_stream(chunks, *, validation_fraction, max_line_bytes)`` yields
  ``(side, b'{"messages":[...]}\\n')`` once per distinct example; ``split_to(chunks,
  write_train, write_validation, ...) -> SplitCounts`` (train, validation, duplicates,
  blank_lines, bytes, sha256) drives two writers; ``bucket_of``/``prompt_digest``/``prompt_of``
  expose the rule (the side follows the prompt: the messages before the final assistant turn)
  and ``example_digest`` the duplicate identity. Both raise ``SplitInputError`` on a line
  the validator rejects.

A file in a common wrong format (UTF-16/32, compressed, binary, one JSON array or
pretty-printed JSON, CR-only line endings) is one dataset-level error naming the fix
(:mod:`shared.dataset.sniff`), not an error per line.

The fast path needs ``msgspec``; without it every line goes through the reference rules
(same reports, about 4× slower).
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
    prompt_digest,
    prompt_of,
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
    "prompt_digest",
    "prompt_of",
    "split_stream",
    "split_to",
    "validate_path",
    "validate_stream",
]
