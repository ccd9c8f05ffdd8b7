"""The ingest room: wire batches, seed payloads and imported files become rows, stored at once."""
