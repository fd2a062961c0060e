"""Benchmarks: each row times an optimised path against a plain reference in the same process.

``python -m benchmarks.run [--quick] [--only NAME] [--json OUT]``; see ``docs/performance.md``.
Rows are modules with ``run(quick: bool, device: torch.device, options) -> dict``.
"""
