"""Pure analysis: payloads (parsed JSON, bytes) in, facts out. No I/O here."""
