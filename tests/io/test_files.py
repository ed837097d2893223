"""ReadFromJSONL: ids and offsets, blank lines, globs, compression, block and split edges."""

from __future__ import annotations

import gzip
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blogflow.events import SourceRecord
from blogflow.io.files import (
    ReadFromJSONL,
    _Block,
    _FileRead,
    _LineBlockProvider,
    _ReadBlockFn,
    _SplitBlocksFn,
)


def expected_records(path: Path, data: bytes) -> list[SourceRecord]:
    """The records of ``data`` by a plain reading of the contract, for comparison."""
    records = []
    offset = 0
    for line in data.split(b"\n"):
        payload = line[:-1] if line.endswith(b"\r") else line
        if payload.strip():
            records.append(SourceRecord(payload, str(path), offset))
        offset += len(line) + 1
    return records


def assert_reads(pattern: str, expected: list[SourceRecord], **kwargs) -> None:
    """Run ReadFromJSONL on FnApiRunner and check it emits exactly ``expected``, in any
    order (duplicates count)."""
    with beam.Pipeline(runner=FnApiRunner()) as p:
        records = p | "ReadFromJSONL" >> ReadFromJSONL(pattern, **kwargs)
        assert_that(records, equal_to(expected), label="CheckRecords")


def read_without_beam(
    path: Path, *, block_size: int, split_size: int, split_fractions=()
) -> list[SourceRecord]:
    """Drive the splittable DoFn by hand: initial splits, then runner-like dynamic splits
    (``try_split(fraction)`` after each claimed block), residuals read to the end."""
    element = _FileRead(
        str(path), path.stat().st_size, CompressionTypes.UNCOMPRESSED, block_size, split_size
    )
    provider = _LineBlockProvider()
    pending = list(provider.split(element, provider.initial_restriction(element)))
    fractions = list(split_fractions)
    blocks: list[_Block] = []
    for _ in range(10_000):
        if not pending:
            break
        tracker = provider.create_tracker(pending.pop(0))
        for block in _SplitBlocksFn().process(element, tracker):
            blocks.append(block)
            if fractions:
                split = tracker.try_split(fractions.pop(0))
                if split is not None:
                    pending.append(split[1])
        tracker.check_done()
    assert not pending, "the reading loop did not finish"
    records: list[SourceRecord] = []
    for block in blocks:
        records.extend(_ReadBlockFn().process(block))
    return records


def test_ids_are_path_and_byte_offset(tmp_path):
    path = tmp_path / "events.jsonl"
    data = b'{"id":"a"}\n{"id":"bb"}\n{"id":"ccc"}\n'
    path.write_bytes(data)
    expected = [
        SourceRecord(b'{"id":"a"}', str(path), 0),
        SourceRecord(b'{"id":"bb"}', str(path), 11),
        SourceRecord(b'{"id":"ccc"}', str(path), 23),
    ]
    assert expected_records(path, data) == expected
    assert [r.id for r in expected] == [f"{path}@0", f"{path}@11", f"{path}@23"]
    assert_reads(str(path), expected)


def test_blank_lines_skipped_and_crlf_stripped(tmp_path):
    path = tmp_path / "blank.jsonl"
    data = b'\n{"a":1}\n\n   \n{"b":2}\r\n\t\r\n{"c":3}'  # no newline at the end
    path.write_bytes(data)
    expected = [
        SourceRecord(b'{"a":1}', str(path), 1),
        SourceRecord(b'{"b":2}', str(path), 14),
        SourceRecord(b'{"c":3}', str(path), 26),
    ]
    assert expected_records(path, data) == expected
    assert_reads(str(path), expected)


def test_reads_every_file_a_glob_matches(tmp_path):
    contents = {}
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        data = b"".join(b'{"file":"%s","n":%d}\n' % (name.encode(), i) for i in range(50))
        (tmp_path / name).write_bytes(data)
        contents[name] = data
    (tmp_path / "ignored.txt").write_bytes(b'{"not":"matched"}\n')
    expected = [r for n, d in contents.items() for r in expected_records(tmp_path / n, d)]
    assert len(expected) == 150
    assert_reads(str(tmp_path / "*.jsonl"), expected)


def test_gzip_is_detected_and_offsets_count_uncompressed_bytes(tmp_path):
    data = b"".join(b'{"n":%d}\n' % i for i in range(300)) + b"\n  \n" + b'{"last":true}'
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(data))
    expected = expected_records(path, data)
    assert len(expected) == 301
    assert_reads(str(path), expected, block_size=64)


def test_no_matching_file_fails_clearly(tmp_path):
    pattern = str(tmp_path / "missing-*.jsonl")
    with pytest.raises(Exception, match="no file matches"):
        assert_reads(pattern, [])


def test_a_line_across_block_and_split_boundaries_is_emitted_whole_once(tmp_path):
    path = tmp_path / "long.jsonl"
    lines = [
        b'{"short":1}',
        b'{"long":"' + b"x" * 100 + b'"}',
        b"{}",
        b'{"tail":' + b"9" * 40 + b"}",
    ]
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    # Blocks of 16 bytes and initial splits of 7 bytes: most lines cross both.
    expected = expected_records(path, data)
    assert [r.payload for r in expected] == lines
    assert_reads(str(path), expected, block_size=16, split_size=7)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
            st.sampled_from([b"", b" ", b"\r", b"{}\r"]),
        ),
        max_size=30,
    ),
    trailing_newline=st.booleans(),
    block_size=st.integers(1, 64),
    split_size=st.integers(1, 200),
    split_fractions=st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.9]), max_size=5),
)
def test_every_line_once_whatever_the_blocks_and_splits(
    tmp_path, lines, trailing_newline, block_size, split_size, split_fractions
):
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path = tmp_path / "prop.jsonl"
    path.write_bytes(data)
    records = read_without_beam(
        path, block_size=block_size, split_size=split_size, split_fractions=split_fractions
    )
    assert sorted(records) == sorted(expected_records(path, data))
    assert len({r.id for r in records}) == len(records)


def test_display_data_and_argument_checks(tmp_path):
    items = {i.key: i.value for i in DisplayData.create_from(ReadFromJSONL("/a/*.jsonl")).items}
    assert items["file_pattern"] == "/a/*.jsonl"
    with pytest.raises(ValueError, match="file_pattern"):
        ReadFromJSONL("")
    with pytest.raises(ValueError, match="block_size"):
        ReadFromJSONL("/a/*.jsonl", block_size=0)
    with pytest.raises(ValueError, match="split_size"):
        ReadFromJSONL("/a/*.jsonl", split_size=-1)
    with pytest.raises(ValueError, match="compression_type"):
        ReadFromJSONL("/a/*.jsonl", compression_type="rar")
