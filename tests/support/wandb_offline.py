"""Reading back what Weights & Biases wrote in offline mode: the records of a run's `.wandb` file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

FILE_HEADER = 7  # b":W&B", a 2-byte magic and a version byte
BLOCK = 32 * 1024  # the log is cut into blocks; a chunk never straddles one
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, data length, type: 1 full, 2 first, 3 middle, 4 last


def offline_runs(wandb_dir: Path) -> list[Path]:
    """The `.wandb` files of the offline runs under `wandb_dir`."""
    return sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))


def read_records(path: Path) -> list:
    """Every `wandb_internal_pb2.Record` in a `.wandb` file (LevelDB's log format)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, offset = [], b"", FILE_HEADER
    while offset + CHUNK_HEADER.size <= len(data):
        if BLOCK - offset % BLOCK < CHUNK_HEADER.size:  # the block's zero-filled tail
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        start = offset + CHUNK_HEADER.size
        pending, offset = pending + data[start : start + length], start + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def logged_history(path: Path) -> list[dict]:
    """The `run.log` calls recorded in a `.wandb` file, as {metric: value} dicts in order."""
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in read_records(path)
        if r.WhichOneof("record_type") == "history"
    ]
