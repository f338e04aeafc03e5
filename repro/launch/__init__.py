"""Grid -> submitit jobs -> run directories: clusters, the frozen code, the job callable, SLURM states, submission."""
