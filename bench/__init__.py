"""The on-sale benchmark: `python -m bench` (see the README's Performance section)."""
