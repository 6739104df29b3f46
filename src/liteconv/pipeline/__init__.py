"""data → model → train → optimize; ``run`` owns the run folder and writes its files."""
