"""Reading what survives of an MCAP file: every complete record up to the first damage.

A recorder killed mid-write leaves a file without summary or footer, possibly ending inside a
record. ``scan_mcap`` walks the records from the start (record = opcode u8, length u64, body),
opens each chunk (schemas, channels and messages inside), and stops cleanly at the first partial
or invalid record. Pure: no ROS, no rosbags reader (which needs the footer).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

MCAP_MAGIC = b"\x89MCAP0\r\n"


class McapScanError(ValueError):
    """Not an MCAP file at all."""


@dataclass
class McapScan:
    """What a scan found: schemas, channels, messages in file order, and where the damage begins."""

    schemas: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # id -> name, encoding, data
    channels: dict[int, tuple[int, str, str, bytes]] = field(default_factory=dict)  # id -> schema, topic, enc, meta
    messages: list[tuple[int, int, bytes]] = field(default_factory=list)  # channel, log_time, data
    good_end: int = 0  # offset after the last complete, valid record
    chunks: int = 0
    reason: str = ""


class _Buf:
    """Little-endian MCAP field reader over one record body."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def bytes(self) -> bytes:
        n = self.take("<I")
        if self.pos + n > len(self.data):
            raise ValueError("field runs past its record")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def str(self) -> str:
        return self.bytes().decode()


def _records(data: bytes, pos: int):
    """(opcode, body, end) for each complete record from ``pos``; stops at the first partial one."""
    while pos + 9 <= len(data):
        op, length = struct.unpack_from("<BQ", data, pos)
        end = pos + 9 + length
        if end > len(data):
            return
        yield op, data[pos + 9:end], end
        pos = end


def _parse_into(scan: McapScan, op: int, body: bytes) -> None:
    b = _Buf(body)
    if op == 0x03:
        sid = b.take("<H")
        scan.schemas[sid] = (b.str(), b.str(), b.bytes().decode())
    elif op == 0x04:
        cid, sid = b.take("<HH")
        scan.channels[cid] = (sid, b.str(), b.str(), b.bytes())
    elif op == 0x05:
        cid, _, log_time, _ = b.take("<HIQQ")
        scan.messages.append((cid, log_time, body[b.pos:]))


def _decompress(compression: str, data: bytes) -> bytes:
    if not compression:
        return data
    from rosbags.rosbag2 import storage_mcap  # zstd/lz4 as rosbags reads them
    if compression not in storage_mcap.DECOMPRESSORS:
        raise ValueError(f"unsupported chunk compression {compression!r}")
    return storage_mcap.DECOMPRESSORS[compression](data, 0)


def scan_mcap(data: bytes) -> McapScan:
    """Every complete record of a possibly truncated MCAP, in file order; stops at the damage."""
    if len(data) < len(MCAP_MAGIC) and MCAP_MAGIC.startswith(data):
        return McapScan(reason=f"truncated inside the magic ({len(data)} bytes)")
    if not data.startswith(MCAP_MAGIC):
        raise McapScanError("not an MCAP file (bad magic)")
    scan = McapScan(good_end=len(MCAP_MAGIC))
    for op, body, end in _records(data, len(MCAP_MAGIC)):
        if op in (0x0F, 0x02):  # data end / footer: the file is whole up to its summary
            scan.good_end, scan.reason = len(data), "complete"
            return scan
        try:
            if op == 0x06:
                b = _Buf(body)
                _, _, size, _ = b.take("<QQQI")
                compression = b.str()
                n = b.take("<Q")
                raw = _decompress(compression, body[b.pos:b.pos + n])
                if len(raw) != size or b.pos + n != len(body):
                    raise ValueError("chunk size mismatch")
                inner = McapScan()
                ends = [e for *_, e in _records(raw, 0)]
                if (ends[-1] if ends else 0) != len(raw):
                    raise ValueError("chunk records do not fill the chunk")
                for iop, ibody, _ in _records(raw, 0):
                    _parse_into(inner, iop, ibody)
                scan.schemas.update(inner.schemas)
                scan.channels.update(inner.channels)
                scan.messages += inner.messages
                scan.chunks += 1
            else:
                _parse_into(scan, op, body)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            scan.reason = f"corrupt record 0x{op:02x} at byte {end - len(body) - 9}: {exc}"
            return scan
        scan.good_end = end
    scan.reason = (f"truncated at byte {scan.good_end} of {len(data)}" if scan.good_end < len(data)
                   else "unfinalised: no summary or footer")
    return scan
