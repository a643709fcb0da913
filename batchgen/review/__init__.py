"""The review app: approve, reject and note a folder's images in the browser.

`batchgen review OUT` serves it (`server.py`, page in `assets/`); the
decisions are the store's (`store/reviews.py`), which `run --redo rejected`
reads. Internal: not part of batchgen's public API; it may change in any release.
"""
