"""The display layer: what the app's pages show, computed from the project store (no drawing, no use cases)."""
