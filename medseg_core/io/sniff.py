"""Recognise a file's format from its bytes (the extension is only a hint) and inflate safely."""

from __future__ import annotations

import struct
import zlib

from .errors import InputError, Limits, human_bytes

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def ext_of(filename: str | None) -> str:
    if not filename:
        return ""
    name = filename.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 and "/" not in name[dot:] else ""


def sniff(data: bytes) -> str:
    """Return one of: zip, gzip, nifti1, nifti2, dicom, png, jpeg, tiff, bmp, unknown."""
    head = data[:1024]
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 348:
        for endian in "<>":
            (size,) = struct.unpack(endian + "i", head[:4])
            if size == 348 and head[344:347] in (b"n+1", b"ni1"):
                return "nifti1"
            if size == 540 and head[4:7] in (b"n+2", b"ni2"):
                return "nifti2"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    # DICOM written without the 128-byte preamble ("raw" DICOM): starts with group 0002 or 0008.
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00":
        return "dicom"
    return "unknown"


def gunzip_bounded(data: bytes, limits: Limits, name: str) -> bytes:
    """Inflate gzip data, refusing output beyond ``limits.max_decompressed_bytes``.

    Memory stays bounded by the limit (a zip/gzip bomb is stopped as soon as it exceeds it).
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    chunk = 1 << 20
    pos = 0
    try:
        while pos < len(data):
            piece = data[pos : pos + chunk]
            pos += chunk
            buf = d.decompress(piece, limits.max_decompressed_bytes + 1 - len(out))
            out += buf
            while d.unconsumed_tail and len(out) <= limits.max_decompressed_bytes:
                buf = d.decompress(d.unconsumed_tail, limits.max_decompressed_bytes + 1 - len(out))
                if not buf:
                    break
                out += buf
            if len(out) > limits.max_decompressed_bytes:
                raise InputError(
                    f"'{name}' expands to more than {human_bytes(limits.max_decompressed_bytes)} when "
                    "decompressed, more than this server accepts; upload a smaller or cropped file."
                )
            if d.eof:
                break
        out += d.flush()
    except zlib.error:
        raise InputError(
            f"'{name}' is a damaged gzip file (its compressed data is corrupt); export or copy it again."
        ) from None
    if not d.eof:
        raise InputError(
            f"'{name}' is cut short: the compressed file ends before its data does; upload the complete file."
        )
    return bytes(out)


def gunzip_head(data: bytes, n: int) -> bytes:
    """The first ``n`` decompressed bytes of gzip data (for reading a header cheaply)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return d.decompress(data[: 1 << 16], n)
    except zlib.error:
        return b""
