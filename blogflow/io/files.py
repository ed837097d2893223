"""JSON-lines archives: a fast, splittable source of :class:`~blogflow.events.SourceRecord`.

:class:`ReadFromJSONL` reads every file a glob matches (any Beam filesystem; gzip, bzip2,
... detected from the file name) and emits one ``SourceRecord`` per non-blank line:
``payload`` is the line without its newline, ``id`` is ``"{path}@{byte offset}"``, stable
across re-reads of the same file.

It is built for throughput (~1.1 µs per line on FnApiRunner against ~4 µs for
``ReadFromText``): a splittable DoFn over byte ranges (:class:`_SplitBlocksFn`) cuts each
range into blocks of about ``block_size`` bytes of whole lines, claiming one block at a
time, and a fused plain DoFn (:class:`_ReadBlockFn`) reads a block in one call and splits
its lines itself. A byte range ``[start, stop)`` owns the lines that *start* inside it, so
ranges can be split anywhere (initially every ``split_size`` bytes, dynamically by the
runner) and every line is read exactly once, whole. Compressed files cannot be split by
byte and are read as one block, streamed, with offsets counted in uncompressed bytes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.display import DisplayDataItem

from blogflow.events import SourceRecord

__all__ = ["ReadFromJSONL"]

_LOGGER = logging.getLogger(__name__)

#: Bytes read and split into lines at once.
DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
#: Initial splits of an uncompressed file, in bytes: the unit of parallelism.
DEFAULT_SPLIT_SIZE = 64 * 1024 * 1024
#: The stop of a compressed file's range: "until the end of the stream".
_TO_EOF = 2**62


class _FileRead(NamedTuple):
    """One matched file and how to read it: the element of :class:`_SplitBlocksFn`."""

    path: str
    size: int
    compression: str
    block_size: int
    split_size: int


class _LineBlockTracker(RestrictionTracker):
    """Claims blocks of whole lines in a byte range (an ``OffsetRange``).

    ``try_claim(end)`` claims the lines from the previous claim up to byte ``end`` (the
    start of the line after the block) and succeeds while the block starts inside the
    range. Splits happen at or after the last claimed ``end``, so every line of a claimed
    block that starts before the range's stop belongs to this reader, even if a split
    happens concurrently.
    """

    def __init__(self, restriction: OffsetRange) -> None:
        self._range = restriction
        self._claimed = restriction.start

    def current_restriction(self) -> OffsetRange:
        return self._range

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(
            completed=self._claimed - self._range.start,
            remaining=max(0, self._range.stop - self._claimed),
        )

    def try_claim(self, end: int) -> bool:
        if end < self._claimed:
            raise ValueError(f"line blocks must be claimed in order: {end} after {self._claimed}")
        if self._claimed >= self._range.stop:
            return False
        self._claimed = end
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        start, stop = self._range.start, self._range.stop
        if self._claimed >= stop:
            return None
        if fraction_of_remainder > 0 and stop == _TO_EOF:
            return None  # a compressed stream of unknown length: only checkpoints
        split_at = self._claimed + int((stop - self._claimed) * fraction_of_remainder)
        if split_at >= stop:
            return None
        self._range = OffsetRange(start, split_at)
        return self._range, OffsetRange(split_at, stop)

    def check_done(self) -> None:
        if self._claimed < self._range.stop:
            raise ValueError(f"lines from byte {self._claimed} to {self._range.stop} were not read")

    def is_bounded(self) -> bool:
        return True


class _LineBlockProvider(RestrictionProvider):
    """Byte ranges of a file: split by ``split_size`` unless the file is compressed."""

    def initial_restriction(self, element: _FileRead) -> OffsetRange:
        if element.compression != CompressionTypes.UNCOMPRESSED:
            return OffsetRange(0, _TO_EOF)
        return OffsetRange(0, element.size)

    def create_tracker(self, restriction: OffsetRange) -> _LineBlockTracker:
        return _LineBlockTracker(restriction)

    def split(self, element: _FileRead, restriction: OffsetRange) -> Iterator[OffsetRange]:
        if restriction.stop == _TO_EOF:
            yield restriction
            return
        yield from restriction.split(element.split_size, min(element.split_size, 1024 * 1024))

    def restriction_size(self, element: _FileRead, restriction: OffsetRange) -> int:
        if restriction.stop == _TO_EOF:
            return element.size if restriction.start == 0 else 0
        return restriction.stop - restriction.start


class _Block(NamedTuple):
    """Whole lines of a file: bytes ``[start, end)``, read by :class:`_ReadBlockFn`.

    ``end`` is :data:`_TO_EOF` for a compressed file, which is read as one block.
    """

    path: str
    start: int
    end: int
    compression: str
    block_size: int


def _line_start_at_or_after(handle: Any, offset: int) -> int:
    """The offset of the first line that starts at or after ``offset`` (or the file's end)."""
    if offset == 0:
        return 0
    handle.seek(offset - 1)
    return offset - 1 + len(handle.readline())


class _SplitBlocksFn(beam.DoFn):
    """Cuts the byte range of a file into blocks of whole lines (splittable).

    Finding a block's end costs one seek and one ``readline``; the lines themselves are
    read by the fused :class:`_ReadBlockFn`. Keeping the splittable DoFn at one output per
    block matters: Beam observes the watermark of every element a splittable DoFn outputs,
    which would cost ~2 µs per line.
    """

    def process(
        self,
        element: _FileRead,
        tracker=beam.DoFn.RestrictionParam(_LineBlockProvider()),
    ) -> Iterator[_Block]:
        restriction: OffsetRange = tracker.current_restriction()
        if restriction.stop == _TO_EOF:
            if tracker.try_claim(_TO_EOF):
                yield _Block(element.path, 0, _TO_EOF, element.compression, element.block_size)
            return
        with FileSystems.open(
            element.path,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        ) as handle:
            pos = _line_start_at_or_after(handle, restriction.start)
            while True:
                stop = tracker.current_restriction().stop
                if pos >= stop:
                    tracker.try_claim(pos)  # no line of ours is left: close the range
                    return
                # The lines starting in [pos, target) form the block, so none starts at or
                # after the range's stop.
                end = _line_start_at_or_after(handle, min(pos + element.block_size, stop))
                if not tracker.try_claim(end):
                    return
                if end > pos:
                    yield _Block(element.path, pos, end, element.compression, element.block_size)
                if end == pos:  # the file is shorter than its matched size
                    tracker.try_claim(stop)
                    return
                pos = end


def _records(path: str, lines: list[bytes], offset: int) -> Iterator[SourceRecord]:
    """The records of consecutive lines, the first starting at byte ``offset``; blank lines
    are skipped and a trailing ``\\r`` is dropped."""
    new = tuple.__new__
    for line in lines:
        size = len(line) + 1
        if line[-1:] == b"\r":
            line = line[:-1]
        if line and not line.isspace():
            yield new(SourceRecord, (line, path, offset))
        offset += size


def _fast_records(path: str, lines: list[bytes], offset: int) -> Iterator[SourceRecord]:
    """:func:`_records` for lines known to hold no ``\\r``."""
    new = tuple.__new__
    for line in lines:
        if line and not line.isspace():
            yield new(SourceRecord, (line, path, offset))
        offset += len(line) + 1


def _block_records(path: str, data: bytes, offset: int) -> Iterator[SourceRecord]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # after the final newline
    if b"\r" in data:
        return _records(path, lines, offset)
    return _fast_records(path, lines, offset)


def _read_exactly(handle: Any, size: int) -> bytes:
    """Read ``size`` bytes, or up to the end of the file, whatever a read call returns."""
    data = handle.read(size)
    if len(data) >= size or not data:
        return data
    parts = [data]
    remaining = size - len(data)
    while remaining > 0:
        more = handle.read(remaining)
        if not more:
            break
        parts.append(more)
        remaining -= len(more)
    return b"".join(parts)


def _stream_blocks(block: _Block) -> Iterator[Iterator[SourceRecord]]:
    """The records of a compressed file, a block of lines at a time."""
    with FileSystems.open(
        block.path, mime_type="application/octet-stream", compression_type=block.compression
    ) as handle:
        offset, carry = 0, b""
        while True:
            chunk = handle.read(block.block_size)
            if not chunk:
                if carry:
                    yield _block_records(block.path, carry, offset)
                return
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            if not cut:
                carry = data  # a line longer than the block goes on
                continue
            carry = data[cut:]
            yield _block_records(block.path, data[:cut], offset)
            offset += cut


class _ReadBlockFn(beam.DoFn):
    """Reads the lines of a :class:`_Block` and emits them as records.

    ``process`` returns an iterator instead of being a generator itself: one Python frame
    less per line.
    """

    def process(self, block: _Block) -> Iterator[SourceRecord]:
        if block.end == _TO_EOF:
            return itertools.chain.from_iterable(_stream_blocks(block))
        with FileSystems.open(
            block.path,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        ) as handle:
            handle.seek(block.start)
            data = _read_exactly(handle, block.end - block.start)
        return _block_records(block.path, data, block.start)


class _MatchFilesFn(beam.DoFn):
    """Expands a glob into :class:`_FileRead` elements; fails if it matches no file."""

    def __init__(self, compression_type: str, block_size: int, split_size: int) -> None:
        self._compression_type = compression_type
        self._block_size = block_size
        self._split_size = split_size

    def process(self, file_pattern: str) -> Iterator[_FileRead]:
        matched = FileSystems.match([file_pattern])[0].metadata_list
        files = sorted(
            (m for m in matched if not m.path.endswith(("/", "\\"))), key=lambda m: m.path
        )
        if not files:
            raise FileNotFoundError(f"ReadFromJSONL: no file matches {file_pattern!r}")
        for metadata in files:
            compression = self._compression_type
            if compression == CompressionTypes.AUTO:
                compression = CompressionTypes.detect_compression_type(metadata.path)
            yield _FileRead(
                metadata.path,
                metadata.size_in_bytes,
                compression,
                self._block_size,
                self._split_size,
            )


class ReadFromJSONL(beam.PTransform):
    """Reads JSON-lines files as :class:`~blogflow.events.SourceRecord` elements.

    Input: the pipeline (``PBegin``). Output: one ``SourceRecord(payload=line,
    origin=path, offset=offset)`` (id ``"{path}@{offset}"``) per non-blank line of every
    file ``file_pattern`` matches, the line without its ``\\n`` (or ``\\r\\n``). Lines
    are not parsed here: a malformed line reaches the parser, which dead-letters it.

    Example::

        records = p | "ReadArchive" >> ReadFromJSONL("/archive/2026-11-*.jsonl.gz")
    """

    def __init__(
        self,
        file_pattern: str,
        *,
        compression_type: str = CompressionTypes.AUTO,
        block_size: int = DEFAULT_BLOCK_SIZE,
        split_size: int = DEFAULT_SPLIT_SIZE,
    ) -> None:
        """
        Args:
            file_pattern: a path or glob on any Beam filesystem, e.g. ``"/data/*.jsonl"``.
            compression_type: a ``CompressionTypes`` value; ``AUTO`` detects it from each
                file's extension.
            block_size: bytes read and split into lines at once.
            split_size: bytes per initial split of an uncompressed file.

        Raises:
            ValueError: on an empty pattern, an unknown compression type or a size that is
                not a positive integer. A pattern matching no file fails the pipeline with
                ``FileNotFoundError`` when it runs.
        """
        super().__init__()
        if not isinstance(file_pattern, str) or not file_pattern.strip():
            raise ValueError(f"file_pattern must be a non-empty path or glob, got {file_pattern!r}")
        if not CompressionTypes.is_valid_compression_type(compression_type):
            raise ValueError(f"unknown compression_type {compression_type!r}")
        for name, value in (("block_size", block_size), ("split_size", split_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._file_pattern = file_pattern
        self._compression_type = compression_type
        self._block_size = block_size
        self._split_size = split_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[SourceRecord]:
        return (
            pbegin
            | "FilePattern" >> beam.Create([self._file_pattern])
            | "MatchFiles"
            >> beam.ParDo(_MatchFilesFn(self._compression_type, self._block_size, self._split_size))
            | "SplitBlocks" >> beam.ParDo(_SplitBlocksFn())
            # The pattern is one element, so without a shuffle every block would be read
            # by the one worker that matched it: spread the blocks (tiny descriptors).
            | "SpreadBlocks" >> beam.Reshuffle()
            | "ReadBlocks" >> beam.ParDo(_ReadBlockFn()).with_output_types(SourceRecord)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "file_pattern": DisplayDataItem(self._file_pattern, label="File pattern"),
            "compression_type": DisplayDataItem(self._compression_type, label="Compression"),
            "block_size": DisplayDataItem(self._block_size, label="Block size (bytes)"),
        }
