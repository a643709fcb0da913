"""The store in, `report.json`, `failed.jsonl` and the HTML gallery out."""
