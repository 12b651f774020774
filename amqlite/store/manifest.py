"""The manifest: what each sealed segment held when it was sealed, so that
start-up can say what a missing, cut or damaged segment lost.

A segment's own records cannot tell what was in the bytes that are gone,
and the records after them only sometimes can. So once a segment is sealed
and indexed, a summary of it (its size; per queue, how many entries and the
range of their seqs, a stream's offsets; how many held delayed messages and
the range of their ids) goes into ``segments.manifest`` beside the log,
rewritten (temp file, fsync, rename) after each new summary and before
compaction deletes segments, so a segment compaction deleted is never
taken for a lost one. The file also names the segment being written then,
so a newest segment that disappeared is noticed too.

At start-up every summary is compared with what the replay found in its
segment; entries that are not there and that no later record removed are
lost, and reported (``store.messages_lost``) per segment and queue. Like
an index, the manifest is never the only copy of anything: without it
start-up loses nothing, it only cannot count.
"""

from __future__ import annotations

from typing import Any

import attrs

from .records import decode_checked, encode_checked

MANIFEST = "segments.manifest"
_MAGIC = b"AMQLMAN1"


@attrs.frozen
class SegmentSummary:
    size: int
    #: (queue id, entries, first seq, last seq), a stream's seqs being offsets.
    queues: tuple[tuple[int, int, int, int], ...]
    #: (held delayed messages, first message id, last message id).
    holds: tuple[int, int, int] = (0, 0, 0)


@attrs.frozen
class Manifest:
    #: The segment appended to when the manifest was written.
    current: int
    summaries: dict[int, SegmentSummary]


def encode(manifest: Manifest) -> bytes:
    return encode_checked(_MAGIC, {
        "current": manifest.current,
        "segments": [[segment, summary.size, [list(queue) for queue in summary.queues], list(summary.holds)]
                     for segment, summary in sorted(manifest.summaries.items())],
    })


def decode(data: bytes) -> Manifest:
    """ValueError if the file is damaged."""
    table = decode_checked(_MAGIC, data)
    try:
        summaries = {
            int(segment): SegmentSummary(int(size), tuple(_ints(queue, 4) for queue in queues), _ints(holds, 3))
            for segment, size, queues, holds in table["segments"]
        }
        return Manifest(int(table["current"]), summaries)
    except (LookupError, TypeError, ValueError) as error:
        raise ValueError(f"not a manifest: {error!r}") from None


def _ints(values: Any, count: int) -> Any:
    if len(values) != count:
        raise ValueError(f"{values!r}: {count} numbers expected")
    return tuple(int(value) for value in values)
