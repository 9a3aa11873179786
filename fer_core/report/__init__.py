"""Ablation reports (tables, statistics, plots, exports) and per-trial artifacts; read-only on storage."""
