"""batchgen: thousands of Gemini images from a job file, resumable and reported."""

from __future__ import annotations

__version__ = "0.1.0"
