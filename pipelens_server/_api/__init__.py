"""The JSON API room: the ingest and read routes under one token-guarded ``/api`` Router."""
