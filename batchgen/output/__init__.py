"""Answers to files: the HTTP client, image checks, atomic writes, sizes, previews."""
