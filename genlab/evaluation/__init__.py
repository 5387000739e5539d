"""The run layer's judging half: `evaluate.py` (genlab eval: metrics.json and report.html), `compare.py`
(genlab compare: runs side by side, a recommendation per goal) and `report.py` (grids, curves, pages)."""
