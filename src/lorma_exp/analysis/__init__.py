"""Analyses of finished runs: tables beside the paper's, convergence, rank and similarity of updates."""
