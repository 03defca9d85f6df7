"""Reports: leaderboard, LaTeX, plots, grids and HTML, read from the store only."""
