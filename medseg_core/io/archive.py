"""Zip archives read entirely in memory with bounded inflation (nothing is written to disk, so a
member named ``../../etc/passwd`` cannot escape anywhere)."""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib

from .errors import InputError, Limits, human_bytes

_SKIP_PREFIXES = ("__MACOSX/",)
_SKIP_NAMES = {".ds_store", "thumbs.db", "dicomdir"}


def read_zip(data: bytes, name: str, limits: Limits) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Members of a zip as ``[(member name, bytes)]`` plus warnings.

    Refuses archives whose declared or actual inflated size exceeds
    ``limits.max_decompressed_bytes``, or with too many members; memory stays bounded by that limit.
    """
    warnings: list[str] = []
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
        raise InputError(
            f"'{name}' is a damaged or incomplete zip archive; create the archive again and re-upload it."
        ) from None
    if len(infos) > limits.max_zip_entries:
        raise InputError(
            f"'{name}' holds {len(infos):,} files, more than the {limits.max_zip_entries:,} this server accepts; "
            "upload one series at a time."
        )
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_decompressed_bytes:
        raise InputError(
            f"'{name}' expands to {human_bytes(declared)}, more than this server accepts "
            f"({human_bytes(limits.max_decompressed_bytes)}); upload one series at a time."
        )
    out = []
    total = 0
    odd_names = 0
    for info in infos:
        if info.is_dir():
            continue
        member = info.filename
        base = member.replace("\\", "/").rsplit("/", 1)[-1]
        if member.startswith(_SKIP_PREFIXES) or base.lower() in _SKIP_NAMES or base.startswith("._"):
            continue
        if member.startswith("/") or ".." in member.replace("\\", "/").split("/"):
            odd_names += 1
        if info.flag_bits & 0x1:
            raise InputError(f"'{name}' is password-protected; upload an unencrypted archive.")
        try:
            with zf.open(info) as fh:
                buf = fh.read(limits.max_decompressed_bytes - total + 1)
        except (
            zipfile.BadZipFile,
            EOFError,
            OSError,
            NotImplementedError,
            RuntimeError,
            ValueError,
            zlib.error,
            lzma.LZMAError,
        ):
            raise InputError(
                f"'{name}' is damaged: the member '{base}' cannot be extracted; create the archive again."
            ) from None
        total += len(buf)
        if total > limits.max_decompressed_bytes:
            raise InputError(
                f"'{name}' expands to more than {human_bytes(limits.max_decompressed_bytes)} (its sizes were "
                "misdeclared: a zip bomb?) and was refused."
            )
        if base.lower().endswith(".zip"):
            warnings.append(f"The archive inside the archive ('{base}') was not opened; unpack it first.")
            continue
        out.append((base or member, buf))
    if odd_names:
        warnings.append(
            f"{odd_names} member name(s) pointed outside the archive folder; they were read in memory only."
        )
    if not out:
        nested = [w for w in warnings if "archive inside the archive" in w]
        if nested:
            raise InputError(
                f"'{name}' holds only another archive, which is not opened; unpack it and upload "
                "the files (or the inner archive) instead."
            )
        raise InputError(f"'{name}' is an empty archive; it holds no files to load.")
    return out, warnings
