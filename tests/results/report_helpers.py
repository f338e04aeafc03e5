"""A small set of hand-made run records (Table 1 at two seeds, part of Table 4) to report on."""

import datetime as dt
import json

from repro.grid import expand, load_table

T1 = {"syncbn-syncbn": [93.0, 93.4], "bn-syncbn": [92.0, 92.4], "syncbn-bn": [91.0, 91.4],
      "bn-bn": [89.0, 89.4], "bn-mbn": [94.0, 94.4], "syncbn-mbn": [94.1, 94.5], "random-init": [80.0, 80.3]}
T4 = {"byol-16": [80.0, 80.2], "byol-128": [88.0, 88.2], "ours-16": [87.0, 87.2], "ours-32": [88.0, 88.2],
      "random-init": [70.0, 70.3]}  # the control: below every trained row, so the verdicts are read


# every run "submitted" one hour before the last one finished
SUBMITTED = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.timezone.utc).timestamp()


def write_records(root, profile="cpu"):
    """Finished-run records, as a run writes them, for Tables 1 and 4 at ``profile``."""
    for table, rows in (("t01", T1), ("t04", T4)):
        for run in expand(load_table(table), profile):
            if run.row not in rows:
                continue
            d = run.run_dir(root)
            d.mkdir(parents=True, exist_ok=True)
            top1 = rows[run.row][run.seed]
            (d / "final.json").write_text(json.dumps({
                "top1": top1, "knn_top1": top1 - 3, "top5": 99.0, "sec_per_iter": 0.3 + 0.01 * run.seed,
                "finished": "2026-11-27T10:00:00+0000", "train_wall_s": 60.0,
                "git": {"commit": "0123456789abcdef", "dirty": False}}))
            (d / "job.json").write_text(json.dumps({"executor": "local", "host": "testhost",
                                                    "job_id": "1", "submitted": SUBMITTED}))
            if table == "t01":  # Table 1's runs logged their loss (Table 4's did not: no curves there)
                (d / "metrics.jsonl").write_text("".join(
                    json.dumps({"step": step, "loss": 4.0 - step / 10 - run.seed / 5, "lr": 0.1}) + "\n"
                    for step in range(1, 21)))
    return root
