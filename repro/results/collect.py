"""Run directories -> one pandas DataFrame -> tables next to the paper's values.

Paper values come from the table file (transcribed, labelled ``paper_*``); reproduced
values come only from ``final.json`` files written by runs. Unfinished runs show their
status (pending / running / failed / cancelled) instead of numbers: from the run directory,
corrected by SLURM's accounting for SLURM jobs (a cancelled job leaves no trace in the
directory): the command line hands in the launcher's ``slurm_states`` as ``scheduler``; the
results never import the launcher.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from ..grid import Run, Table, expand
from ..paths import output_dir
from ..rundir import FINISHED, RunDir, Scheduler, Status, run_states

OUT_DIR = output_dir()
METRICS = ("top1", "top5", "best_top1", "best_epoch", "knn_top1", "sec_per_iter", "steps", "total_steps",
           "epochs_done", "final_loss", "train_wall_s", "world_size", "diverged_at_step",
           # detection (Tables 9-11)
           "box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50", "mask_ap75")


def collect(table: Table, profile: str, runs_root: str | Path, scheduler: Scheduler | None = None,
            runs: list[Run] | None = None) -> pd.DataFrame:
    """One row per run (row x seed) with its status and, when done, its measured metrics.

    ``scheduler``: asked (once) about the runs' SLURM jobs (None: the directories alone).
    ``runs``: the runs of (table, profile) where the caller has them (else expanded here)."""
    records = []
    runs = expand(table, profile) if runs is None else runs
    dirs = [RunDir.of(r, runs_root) for r in runs]
    for run, run_dir, state in zip(runs, dirs, run_states(dirs, scheduler)):
        rec = {"row": run.row, "seed": run.seed, "run_id": run.run_id, "profile": profile,
               "status": state.status.value}
        final = run_dir.read_final() if state.status in FINISHED else None
        for key in METRICS:
            rec[key] = final.get(key) if final else None
        if state.error is not None:
            rec["error"] = state.error
        records.append(rec)
    return pd.DataFrame.from_records(records)


# A row's status is its worst run's, in this order (a new run shows as pending); else done. A
# row whose runs all finished reads ``diverged`` when the training of any of them diverged.
_WORST_FIRST = (Status.CORRUPT, Status.FAILED, Status.CANCELLED, Status.RUNNING, Status.PENDING, Status.NEW,
                Status.DIVERGED)


def _overall(statuses: list[str]) -> Status:
    for s in _WORST_FIRST:
        if s in statuses:
            return Status.PENDING if s == Status.NEW else s
    return Status.DONE


def summarise(table: Table, runs: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """One row per paper row: paper values, measured mean (and std over seeds), status, and at
    the paper profile the difference to the paper (``<col>_delta``)."""
    prof = table.profiles.get(profile) if profile else None
    rows = []
    for row in table.rows:
        if row.profiles is not None and profile not in row.profiles:
            continue  # a control of other scales (e.g. random-init at cpu) is no row of this one
        mine = runs[runs["row"] == row.id]
        done = mine[mine["status"] == Status.DONE]
        rec = {"row": row.id, "label": row.label}
        for col in table.columns:
            rec[f"paper_{col}"] = row.paper.get(col)
            values = pd.to_numeric(done[col], errors="coerce").dropna() if col in done else pd.Series(dtype=float)
            rec[col] = values.mean() if len(values) else None
            rec[f"{col}_std"] = values.std(ddof=1) if len(values) > 1 else None
            if table.is_paper_scale(profile):  # a difference to the paper means something at its scale only
                both = rec[col] is not None and rec[f"paper_{col}"] is not None
                rec[f"{col}_delta"] = rec[col] - rec[f"paper_{col}"] if both else None
        for extra in ("knn_top1", "best_top1"):
            if extra not in table.columns and extra in done:
                values = pd.to_numeric(done[extra], errors="coerce").dropna()
                rec[extra] = values.mean() if len(values) else None
        rec["seeds_done"] = len(done)
        rec["seeds_diverged"] = int((mine["status"] == Status.DIVERGED).sum())
        rec["seeds"] = len(mine)
        if not row.run:
            rec["status"] = Status.PAPER_ONLY.value
        elif prof is not None and not prof.runs_row(row):
            rec["status"] = Status.NOT_IN_PROFILE.value
        else:
            rec["status"] = _overall(list(mine["status"])).value
        rows.append(rec)
    out = pd.DataFrame.from_records(rows)
    if table.reference_row and "sec_per_iter" in table.columns:
        ref = out.set_index("row").loc[table.reference_row]
        for prefix in ("paper_", ""):
            denom = ref[f"{prefix}sec_per_iter"]
            out[f"{prefix}sec_per_iter_ratio"] = [
                (v / denom) if v is not None and denom is not None and pd.notna(v) and pd.notna(denom) else None
                for v in out[f"{prefix}sec_per_iter"]
            ]
    return out


def fmt(v, digits: int = 2) -> str:
    """A value as the tables and the report print it: ``-`` when missing, else ``digits`` decimals."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def display_frame(table: Table, summary: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The human-facing table: paper and reproduced values side by side, as strings."""
    cols = {"Row": summary["label"]}
    for col, spec in table.columns.items():
        digits = 3 if col == "sec_per_iter" else 2
        cols[f"{spec.label} (paper)"] = [fmt(v, digits) for v in summary[f"paper_{col}"]]
        ours = []
        for v, sd in zip(summary[col], summary[f"{col}_std"]):
            ours.append(fmt(v, digits) + (f" ± {fmt(sd, digits)}" if sd is not None and pd.notna(sd) else ""))
        cols[f"{spec.label} ({profile})"] = ours
        if col == "sec_per_iter" and "sec_per_iter_ratio" in summary:
            cols["ratio (paper)"] = [fmt(v) for v in summary["paper_sec_per_iter_ratio"]]
            cols[f"ratio ({profile})"] = [fmt(v) for v in summary["sec_per_iter_ratio"]]
        elif col != "sec_per_iter" and table.is_paper_scale(profile):
            # At a reduced scale (other data, network, steps) the paper's value stands beside
            # the measured one, and no difference is drawn.
            cols[f"Δ {spec.label}"] = [fmt(v) for v in summary[f"{col}_delta"]]
    if "knn_top1" in summary and "knn_top1" not in table.columns:
        cols[f"kNN top-1 ({profile})"] = [fmt(v) for v in summary["knn_top1"]]
    cols["seeds"] = [f"{d}/{n}" + (f" ({k} diverged)" if k else "")
                     for d, n, k in zip(summary["seeds_done"], summary["seeds"], _diverged_counts(summary))]
    cols["status"] = summary["status"]
    return pd.DataFrame(cols)


def _diverged_counts(summary: pd.DataFrame) -> list[int]:
    """Each row's number of seeds whose training diverged (0 where a summary has no such column)."""
    if "seeds_diverged" not in summary:
        return [0] * len(summary)
    return [int(k) if pd.notna(k) else 0 for k in summary["seeds_diverged"]]


def done_text(runs: pd.DataFrame) -> str:
    """``7/9 runs done`` (``; 1 diverged`` where the training of some diverged)."""
    diverged = int((runs["status"] == Status.DIVERGED).sum())
    return (f"{int((runs['status'] == Status.DONE).sum())}/{len(runs)} runs done"
            + (f", {diverged} diverged" if diverged else ""))


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically write ``text`` unless ``path`` already holds it; return whether it wrote."""
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, lambda f: f.write(data))
    return True


def output_stem(table: Table) -> str:
    """``t01`` -> ``table1``."""
    digits = "".join(ch for ch in table.name if ch.isdigit())
    return f"table{int(digits)}" if digits else table.name


def write_table_files(folder: str | Path, table: Table, profile: str, runs: pd.DataFrame, summary: pd.DataFrame,
                      *, header: str, problems: str = "", runs_columns_out: tuple[str, ...] = (),
                      tex: bool = True) -> dict[str, Path]:
    """Write ``<folder>/tableN.{csv,md[,tex]}`` and ``tableN_runs.csv``; return the paths.

    Every file is rewritten only when its content changes: make redraws figures from them
    (Figure 3 from table4.csv) exactly when results change.
    """
    folder = Path(folder)
    stem = output_stem(table)
    paths = {ext: folder / f"{stem}.{ext}" for ext in ("csv", "md", "tex") if tex or ext != "tex"}
    paths["runs"] = folder / f"{stem}_runs.csv"
    shown = display_frame(table, summary, profile)
    with_profile = summary.copy()
    with_profile.insert(2, "profile", profile)
    write_if_changed(paths["csv"], with_profile.to_csv(index=False))
    write_if_changed(paths["runs"], runs.drop(columns=list(runs_columns_out), errors="ignore").to_csv(index=False))
    write_if_changed(paths["md"], header + shown.to_markdown(index=False) + "\n" + problems)
    if tex:
        write_if_changed(paths["tex"], shown.to_latex(index=False, escape=True))
    return paths


def render(table: Table, profile: str, runs_root: str | Path, out_dir: str | Path = OUT_DIR,
           scheduler: Scheduler | None = None, runs: list[Run] | None = None) -> dict[str, Path]:
    """Write ``<out>/tableN.{csv,md,tex}`` (and the per-run CSV); return the paths.
    ``scheduler`` and ``runs``: as for :func:`collect`."""
    return _render(table, profile, runs_root, out_dir, collect(table, profile, runs_root, scheduler, runs))


def _render(table: Table, profile: str, runs_root: str | Path, out_dir: str | Path,
            runs: pd.DataFrame) -> dict[str, Path]:
    summary = summarise(table, runs, profile)
    header = (
        f"# {table.title}\n\n"
        f"Profile `{profile}`: {table.profiles[profile].description}\n\n"
        f"Paper values: {table.source}. Reproduced values: measured by the runs under "
        f"`{Path(runs_root)}` ({done_text(runs)}; "
        f"rendered {time.strftime('%Y-%m-%d %H:%M')}).\n\n"
    )
    return write_table_files(out_dir, table, profile, runs, summary, header=header,
                             problems=reading_note(table, profile, summary) + run_notes(runs))


def reading_note(table: Table, profile: str, summary: pd.DataFrame) -> str:
    """What a reduced-scale table of pre-training can and cannot show, from its own numbers:
    whether a `random init` control ran and every trained row beats it, and how many seeds.
    Empty at the paper's scale and for transfer tables."""
    from .claims import CONTROL_ROW, needs_control

    metric = next((c for c in table.columns if c != "sec_per_iter"), None)
    if metric is None or not needs_control(table, profile, metric):
        return ""
    done = summary[(summary["status"] != Status.PAPER_ONLY) & summary[metric].notna()]
    if done.empty:
        return ""
    label = table.columns[metric].label
    lines = []
    control = done[done["row"] == CONTROL_ROW]
    trained = done[done["row"] != CONTROL_ROW]
    if control.empty:
        lines.append(f"**Read with care.** No `{CONTROL_ROW}` control has a result at this profile (the same "
                     "network, never trained, probed the same way), so nothing here shows that training learned anything: at a "
                     "small scale a random encoder can score as well as a trained one or better (SPEC §7). It "
                     "shows a working pipeline, not evidence for or against the paper.")
    else:
        level = float(control[metric].iloc[0])
        below = trained[trained[metric] <= level]
        if len(below):
            lines.append(f"**No learning signal.** {len(below)} of {len(trained)} trained rows score at or below "
                         f"the `{CONTROL_ROW}` control ({label}: {level:.2f}), the same network never trained: "
                         "at this scale training did not make better features than a random network, so the "
                         "rows' ordering says nothing about the methods.")
        else:
            gain = float(trained[metric].min()) - level
            lines.append(f"Every trained row scores above the `{CONTROL_ROW}` control ({label}: {level:.2f}), "
                         f"the lowest by {gain:.2f} points: training learned something at this scale.")
    if "seeds_diverged" in summary:
        hit = summary[pd.to_numeric(summary["seeds_diverged"], errors="coerce").fillna(0) > 0]
        if len(hit):
            said = ", ".join(f"{r.label} at {int(r.seeds_diverged)} of {int(r.seeds)} seeds" for r in hit.itertuples())
            lines.append(f"**Training diverged** ({said}): the loss became NaN or Inf, the run's result at its "
                         "config and seed. A diverged run has no accuracy, so such a row's value is the mean over "
                         "the seeds that trained, and the claims report reads no contrast of it as evidence.")
    seeds = int(done["seeds_done"].max())
    if seeds <= 1:
        lines.append("One seed per row: differences of a point or two between rows are within the run-to-run "
                     "noise of a reduced scale, so this table cannot order the methods. The claims report "
                     "(`make report`) reads paired seeds of the CPU-scale campaign (`make cpu-evidence`, "
                     "results/cpu/README.md).")
    else:
        lines.append(f"{seeds} seeds per row (mean ± standard deviation); the claims report (`make report`) gives "
                     "each of the paper's contrasts with its interval over the paired seeds.")
    return "\n" + "\n\n".join(lines) + "\n"


def render_unless_less_complete(table: Table, profile: str, runs_root: str | Path, out_dir: str | Path = OUT_DIR,
                                scheduler: Scheduler | None = None,
                                runs: list[Run] | None = None) -> tuple[dict[str, Path], str | None]:
    """:func:`render`, unless ``<out>`` already holds this table at this profile with more runs
    done (a second launcher, or one whose runs failed, must not replace a more complete
    table). Returns the paths and, when it kept the files, why (None when it rendered)."""
    stem = Path(out_dir) / output_stem(table)
    paths = {ext: Path(f"{stem}.{ext}") for ext in ("csv", "md", "tex")} | {"runs": Path(f"{stem}_runs.csv")}
    before = _done_rendered(paths["runs"], profile)
    frame = collect(table, profile, runs_root, scheduler, runs)
    now = int(frame["status"].isin(FINISHED).sum())
    if before is not None and before > now:
        return paths, (f"kept {paths['md']}: it shows {before} runs done at profile {profile}, the run directories "
                       f"{now} now (python -m repro render {table.name} --profile {profile} rewrites it)")
    return _render(table, profile, runs_root, out_dir, frame), None


def _done_rendered(runs_csv: Path, profile: str) -> int | None:
    """How many runs the rendered ``tableN_runs.csv`` shows done at ``profile`` (None: none rendered)."""
    try:
        old = pd.read_csv(runs_csv)
    except (OSError, ValueError):
        return None
    if not {"profile", "status"} <= set(old.columns) or not (old["profile"] == profile).any():
        return None
    return int(((old["profile"] == profile) & old["status"].isin(FINISHED)).sum())


def run_notes(runs: pd.DataFrame) -> str:
    """Markdown lines under the table: each run whose training diverged, each failed or cancelled
    run, and why."""
    out = ""
    diverged = runs[runs["status"] == Status.DIVERGED]
    if not diverged.empty:
        lines = [f"- `{r.run_id}`: {r.error}" for r in diverged.itertuples()]
        out += ("\nRuns whose training diverged (the loss became NaN or Inf; a result of the config at that seed, "
                "with no accuracy: the row's mean is over the seeds that trained):\n\n" + "\n".join(lines) + "\n")
    bad = runs[runs["status"].isin([Status.FAILED.value, Status.CANCELLED.value, Status.CORRUPT.value])]
    if bad.empty:
        return out
    lines = [f"- `{r.run_id}` {r.status}: {r.error}" for r in bad.itertuples()]
    return out + "\nRuns that did not finish:\n\n" + "\n".join(lines) + "\n"
