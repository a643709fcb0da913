"""Sniff an image's mime type from its bytes, never from its file name."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

#: Input types the model accepts inline.
ACCEPTED_INPUT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def sniff_mime(head: bytes) -> str | None:
    """Return the mime type of image bytes (only the first 16 are needed)."""
    for magic, mime in _SIGNATURES:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def extension_for(mime_type: str) -> str:
    """File extension for a returned mime type; unknown types keep their subtype."""
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime in EXTENSIONS:
        return EXTENSIONS[mime]
    sub = mime.rsplit("/", 1)[-1]
    return "".join(c for c in sub if c.isalnum())[:8] or "bin"
