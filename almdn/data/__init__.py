"""Dataset formats, validation and the demo dataset generator."""
