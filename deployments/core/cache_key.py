"""The cache key: what makes two requests the same request.

SHA-256 over the upload's bytes, the normalized options and the identity (git blob SHA-1) of
the style's weights (and of the face style's). Results are content-addressed, so a key never
needs invalidating: new weights give new keys.
"""

from __future__ import annotations

import hashlib

from .media import Upload, content_digest
from .options import StylizeOptions

# Bump when the pipeline's output changes for the same input. 2: crop=face also looks for
# small faces where the small copy shows none.
KEY_VERSION = b"animegan-serve/2"


def cache_key(
    upload: Upload, options: StylizeOptions, weights_sha1: str, face_sha1: str | None = None
) -> str:
    """The key (a spooled video's file is read to hash it: call it off the event loop);
    `face_sha1` is the face style's weights identity, where the options name one."""
    digest = hashlib.sha256(KEY_VERSION)
    o = options
    described = f"{weights_sha1}|{o.style}|{o.size}|{o.crop}|{o.format}|{o.quality}"
    if o.face_style is not None:  # the keys of requests without one stay as they were
        described += f"|faces|{face_sha1}|{o.face_style}"
    digest.update(described.encode())
    digest.update(content_digest(upload))
    return digest.hexdigest()
