"""Running the pipeline: signals and processes, the run lock, preflight, summaries, several
datasets, the run archive, and the typed step results."""
