"""The claims report: every table, Figure 3 and a verdict per claim and profile.

``python -m repro report --runs runs --runs results/cpu --out tables/out`` writes
``report.md`` (with ``figures/`` and one folder of rendered tables per profile beside it)
and ``report.html``, the same content in one self-contained page (styles inline, figures
as data URIs, links only to anchors of the page).

Run roots are searched in order: a table's results at a profile come from the first root
that holds ``<root>/<table>/<profile>/``. Provenance (commits, machine, wall time) comes
from the run records themselves and from ``<root>/machine.json`` when a campaign wrote one.
Nothing in the report is dated by the rendering, so rendering the same records twice
gives the same files.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import ConfigError
from ..grid import PAPER_PROFILE, TABLES_DIR, Table, expand, load_table
from ..paths import REPO
from ..rundir import FINISHED, RunDir, Scheduler, Status
from . import figures as fig3
from .provenance import runs_provenance
from .curves import draw_curves
from .claims import (CLAIMS_FILE, CONTROL_ROW, VERDICTS, Claim, Verdict, diverged_seeds, evaluate, load_claims,
                     measured_values, needs_control, out_of_scope, paper_values)
from .collect import (collect, display_frame, done_text, fmt, output_stem, run_notes, summarise,
                      write_if_changed, write_table_files)

PAPER_NUMBERS = "paper numbers"
SECONDARY = {"top1": "knn_top1"}  # at reduced scale a top-1 claim is also checked on the kNN probe


@dataclass
class TableResults:
    table: Table
    profile: str
    root: Path
    runs: pd.DataFrame  # results.collect
    summary: pd.DataFrame  # results.summarise
    run_dirs: dict[str, RunDir] = field(default_factory=dict)  # run id -> its directory under root


def all_tables() -> list[Table]:
    return [load_table(p) for p in sorted(TABLES_DIR.glob("t[0-9]*.yaml"))]


def discover(roots: list[Path], tables: list[Table], profiles: list[str] | None,
             scheduler: Scheduler | None = None) -> dict[tuple[str, str], TableResults]:
    """(table, profile) -> results, for every profile with a run folder under some root."""
    found: dict[tuple[str, str], TableResults] = {}
    for table in tables:
        for root in roots:
            folder = root / table.name
            if not folder.is_dir():
                continue
            for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                profile = sub.name
                if (table.name, profile) in found or profile not in table.profiles:
                    continue
                if profiles is not None and profile not in profiles:
                    continue
                planned = expand(table, profile)
                runs = collect(table, profile, root, scheduler, planned)
                found[(table.name, profile)] = TableResults(table, profile, root, runs, summarise(table, runs, profile),
                                                            {r.run_id: RunDir.of(r, root) for r in planned})
    return found


# --------------------------------------------------------------------------- provenance


def _shown_path(p: Path) -> str:
    """A path as the report prints it: relative to the repository when inside it."""
    try:
        return p.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class ClaimVerdicts:
    """A claim's verdicts: on the paper's own numbers, at each profile, and on the kNN probe."""

    claim: Claim
    table: Table
    paper: Verdict  # the check applied to the values transcribed from the paper
    profiles: dict[str, Verdict | None]  # None: the table has no such profile
    knn: dict[str, Verdict] = field(default_factory=dict)  # reduced profiles with results: the kNN check
    # profile -> (seeds with results, seeds planned) of the claim's table where fewer seeds than
    # planned have results: a verdict read before the planned seeds are in is interim.
    interim: dict[str, tuple[int, int]] = field(default_factory=dict)

    def at(self, column: str) -> Verdict | None:
        """The verdict of a column of the verdicts table (``PAPER_NUMBERS`` or a profile)."""
        return self.paper if column == PAPER_NUMBERS else self.profiles.get(column)


def verdicts(claims: list[Claim], found: dict[tuple[str, str], TableResults], profiles: list[str],
             tables: dict[str, Table]) -> list[ClaimVerdicts]:
    """One entry per claim: its verdict on the paper's numbers and at every profile."""
    out = []
    for claim in claims:
        table = tables[claim.table]
        paper = evaluate(claim, paper_values(table, claim.metric), PAPER_NUMBERS)
        at_profile: dict[str, Verdict | None] = {}
        knn: dict[str, Verdict] = {}
        interim: dict[str, tuple[int, int]] = {}
        for profile in profiles:
            tr = found.get((claim.table, profile))
            if profile not in table.profiles:
                at_profile[profile] = None  # the table has no such scale
                continue
            runs = tr.runs if tr is not None else pd.DataFrame(columns=["row", "seed", "status"])
            scope = out_of_scope(claim, table, profile)
            diverged = diverged_seeds(runs)
            at_profile[profile] = evaluate(claim, measured_values(table, profile, runs, claim.metric), profile,
                                           paper=paper_values(table, claim.metric),
                                           gate=needs_control(table, profile, claim.metric), scope=scope,
                                           diverged=diverged)
            seeds_in = runs.loc[runs["status"].isin(FINISHED), "seed"].nunique()
            planned = len(table.profiles[profile].seeds)
            if 0 < seeds_in < planned and scope is None:  # the design's verdict waits for no seed
                interim[profile] = (seeds_in, planned)
            second = SECONDARY.get(claim.metric)
            if second and not table.is_paper_scale(profile) and tr is not None:
                # the paper gives no kNN numbers: the margins the MDE is compared with are its top-1 margins
                knn[profile] = evaluate(claim, measured_values(table, profile, runs, second), profile, second,
                                        paper=paper_values(table, claim.metric),
                                        gate=needs_control(table, profile, second), scope=scope,
                                        diverged=diverged)
        out.append(ClaimVerdicts(claim, table, paper, at_profile, knn, interim))
    return out


def _badge(v: str) -> str:
    return f'<span class="verdict v-{v.replace(" ", "-")}">{v}</span>'


def _cell(entry: ClaimVerdicts, profile: str) -> str:
    v = entry.at(profile)
    if v is None:
        return "—"
    text = _badge(v.verdict)
    second = entry.knn.get(profile) if profile != PAPER_NUMBERS else None
    if second is not None and second.verdict != "not run":
        text += f" (kNN: {_badge(second.verdict)})"
    if profile in entry.interim and v.verdict != "not run":
        text += " *interim ({} of {} seeds)*".format(*entry.interim[profile])
    return text


def _evidence_md(v: Verdict, table: Table) -> list[str]:
    labels = {r.id: r.label for r in table.rows}
    digits = 3 if v.metric == "sec_per_iter" else 2
    lines = [f"| row | source | n | mean | std | values ({v.metric}) |", "|---|---|---|---|---|---|"]
    for rv in v.evidence:
        vals = ", ".join(fmt(x, digits) for x in rv.values)
        lines.append(f"| {labels.get(rv.row, rv.row)} (`{rv.row}`) | {rv.source} | {rv.n} | "
                     f"{fmt(rv.mean, digits)} | {fmt(rv.std, digits)} | {vals} |")
    if v.signal is not None:
        lines += [""] + _signal_md(v)
    if v.verdict == "no learning signal":
        return lines + ["", "The conditions are not read: without a learning signal the rows' ordering says "
                        "nothing about the methods."]
    if v.premise is not None and v.premise.interval is not None:
        p = v.premise
        lines += ["", f"Premise: {p.condition.text}: {p.interval.estimate:+.2f}"
                  + ("" if p.interval.se is None or p.interval.se == 0
                     else f" [{p.interval.low:+.2f}, {p.interval.high:+.2f}]")
                  + f" ({p.interval.method}): {'holds' if p.outcome == 'holds' else 'does not hold'}."]
    if v.verdict == "not applicable":
        return lines + ["", "The conditions are not read: the check presumes what the premise states."]
    lines += ["", "| condition | estimate | 95% interval | minimum detectable effect | paper's margin | noise | outcome "
              "| per-contrast interval |", "|---|---|---|---|---|---|---|---|"]
    for r in v.results:
        if r.outcome == "not run":
            lines.append(f"| {r.condition.text} | - | - | - | - | - | not run (missing: {', '.join(r.missing)}) |")
            continue
        i, log = r.interval, r.condition.log
        f = (lambda x: f"{x:.3f}") if log else (lambda x: f"{x:.2f}")
        if i.se is None or i.se == 0:
            ci = "not measured" if i.se is None else "exact"
        elif r.condition.ratio:  # the interval of the log contrast, shown as one of the ratio itself
            sign = r.condition.terms[r.condition.ratio[0]]  # +1: log(num / den); -1: log(den / num)
            lo, hi = sorted(math.exp(sign * x) for x in (i.low, i.high))
            ci = f"[{lo:.3f}, {hi:.3f}] (of the ratio)"
        else:
            ci = f"[{f(i.low)}, {f(i.high)}]"
        mde = "-" if i.mde is None or i.se == 0 else f(i.mde) + (" (log)" if log else "")
        paper = "-" if r.paper_margin is None else f(r.paper_margin) + (" (log)" if log else "")
        outcome = r.outcome + (" (cannot decide at this number of seeds)" if r.outcome == "inconclusive"
                               and r.undecidable else "")
        if r.outcome in ("holds", "inconclusive") and r.below_papers_effect:
            outcome += " (smaller than the paper's effect)"
        estimate = fmt(r.shown, 3)
        robust = "-"
        if r.robust is not None:
            j = r.robust
            band = "not measured" if j.se is None else f"[{f(j.low)}, {f(j.high)}]" if j.se else "exact"
            robust = f"{band} ({j.method}): {r.robust_outcome}" + (" (differs)" if r.robust_differs else "")
        lines.append(f"| {r.condition.text} | {estimate} | {ci} | {mde} | {paper} | {i.method} | {outcome} | {robust} |")
    return lines


def _signal_md(v: Verdict) -> list[str]:
    """The learning-signal gate: each trained row against the random-init control."""
    if not v.signal:
        return [f"Learning-signal gate: no `{CONTROL_ROW}` control row has results at this profile."]
    lines = [f"Learning-signal gate (trained row − `{CONTROL_ROW}`, paired by seed):", "",
             "| trained row | trained mean | random-init mean | difference | 95% interval | noise | beats the control |",
             "|---|---|---|---|---|---|---|"]
    for s in v.signal:
        i = s.interval
        ci = "not measured" if i.se is None else f"[{i.low:.2f}, {i.high:.2f}]"
        lines.append(f"| `{s.row}` | {s.trained:.2f} | {s.control:.2f} | {i.estimate:+.2f} | {ci} | {i.method} | "
                     f"{'yes' if s.beats else 'no'} |")
    return lines


def claims_markdown(entries: list[ClaimVerdicts], profiles: list[str], scales: dict[str, str]) -> list[str]:
    cols = [PAPER_NUMBERS] + profiles
    paper_like = {p for e in entries for p in profiles if e.table.is_paper_scale(p)}
    header = ["claim", "where"] + [_column_title(c, scales, c in paper_like) for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in entries:
        c = e.claim
        cells = [f"[{c.id}](#claim-{c.id})", c.where] + [_cell(e, p) for p in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "— : the table has no such profile. At reduced scales a top-1 claim is also checked on the "
              "kNN probe, shown in brackets when it ran. *interim*: fewer of the table's seeds have results at that "
              "profile than it plans; the verdict reads those in so far and may change when the rest are in.", ""]
    counts = {p: {k: sum(1 for e in entries if e.at(p) is not None and e.at(p).verdict == k) for k in VERDICTS}
              for p in profiles}
    for p in profiles:
        unfinished = sorted({e.table.name for e in entries if p in e.interim and e.at(p).verdict != "not run"})
        lines.append(f"- `{p}` ({_scale(p, scales)}): " + ", ".join(f"{n} {k}" for k, n in counts[p].items() if n)
                     + (f"; interim: {', '.join(unfinished)} has fewer seeds in than planned" if unfinished else ""))
    lines.append("")
    for e in entries:
        c, table = e.claim, e.table
        lines += [f'<a id="claim-{c.id}"></a>', "", f"### {c.id}", "", f"{c.where}:", "", f"> “{c.quote}”", ""]
        lines.append(f"Check on `{c.metric}` of {c.table}: " + "; ".join(r.condition.text for r in e.paper.results)
                     + (f" (tolerance {c.tolerance:g})" if c.tolerance else "") + "." + (f" {c.note}" if c.note else ""))
        lines.append("")
        for p in cols:
            v = e.at(p)
            if v is None:
                continue
            title = "The paper's own numbers (a check of the transcription, not evidence)" if p == PAPER_NUMBERS \
                else f"Profile `{p}` ({_scale(p, scales).split(':')[0].rstrip('.')})"
            lines += [f"**{title}**: {_badge(v.verdict)}: {v.reason}.", ""]
            if p in e.interim and v.verdict != "not run":
                lines += ["Interim: {} of the {} seeds this profile plans have results; the verdict may change "
                          "when the rest are in.".format(*e.interim[p]), ""]
            if v.substitutions:
                lines += ["Rows substituted at this scale: " + ", ".join(f"`{a}` → `{b}`" for a, b in
                                                                        v.substitutions.items()) + ".", ""]
            if v.verdict != "not run" or any(r.outcome != "not run" for r in v.results):
                if p != PAPER_NUMBERS and v.noise is not None:
                    lines += [f"Pooled run-to-run std of `{v.metric}` at this profile: {v.noise:.3g}"
                              + (" (of log values)" if any(r.condition.log for r in v.results) else "") + ".", ""]
                lines += _evidence_md(v, table) + [""]
            second = e.knn.get(p) if p != PAPER_NUMBERS else None
            if second is not None and second.verdict != "not run":
                noise = f" Pooled run-to-run std of `{second.metric}`: {second.noise:.3g}." if second.noise else ""
                lines += [f"Same check on the kNN probe (`{second.metric}`): {_badge(second.verdict)}: "
                          f"{second.reason}.{noise}", ""] + _evidence_md(second, table) + [""]
    return lines


def _scale(profile: str, scales: dict[str, str]) -> str:
    if profile == PAPER_NUMBERS:
        return "values transcribed from the paper"
    return " ".join(scales.get(profile, f"reduced scale ({profile}), never paper scale").split())


def _column_title(profile: str, scales: dict[str, str], paper_like: bool = False) -> str:
    if profile == PAPER_NUMBERS:
        return "paper's numbers"
    if profile == PAPER_PROFILE:
        return "reproduced, paper scale"
    return f"`{profile}` (paper scale)" if paper_like else f"`{profile}` (reduced scale)"


# --------------------------------------------------------------------------- figures


def draw_figures(table4: Table, found: dict[tuple[str, str], TableResults], out: Path) -> list[Path]:
    """Figure 3 from the Table 4 summaries the report holds (the paper's panel alone without them)."""
    summaries = {tr.profile: tr.summary for (name, _), tr in found.items() if name == table4.name}
    return fig3.draw(fig3.figure_data(table4, summaries), out)


# --------------------------------------------------------------------------- the report


def build(roots: list[str | Path], out: str | Path, profiles: list[str] | None = None,
          exclude: tuple[str, ...] = (), claims_file: str | Path | None = None,
          scheduler: Scheduler | None = None) -> dict[str, Path]:
    """Write ``<out>/report.md`` and ``<out>/report.html``; return their paths."""
    roots = [Path(r) for r in roots]
    out = Path(out)
    tables = all_tables()  # each table file loaded once for the whole report
    by_name = {t.name: t for t in tables}
    claims = load_claims(claims_file or CLAIMS_FILE, by_name)
    found = {k: v for k, v in discover(roots, tables, profiles, scheduler).items() if k[1] not in exclude}
    seen = sorted({p for _, p in found}, key=lambda p: (p != PAPER_PROFILE, p))
    shown_profiles = [PAPER_PROFILE] + [p for p in seen if p != PAPER_PROFILE]

    for (_, profile), tr in found.items():  # rendered tables, one folder per profile
        write_table_files(out / "tables" / profile, tr.table, profile, tr.runs, tr.summary,
                          header=f"# {tr.table.title}\n\n", runs_columns_out=("error",), tex=False)
    figure_paths = draw_figures(by_name[fig3.TABLE], found, out / "figures")
    curves = {key: draw_curves(tr.table, tr.profile, tr.root,
                               out / "figures" / f"curves_{output_stem(tr.table)}_{tr.profile}.png")
              for key, tr in found.items()}
    entries = verdicts(claims.claims, found, shown_profiles, by_name)

    md = ["# Momentum² Teacher: the paper's claims against reproduced results", ""]
    md += ["Each claim of the paper (Li, Liu, Sun 2020) is checked against the results of each profile "
           "separately. A verdict at a reduced scale says whether the paper's ordering shows up at that "
           "scale; it is never a verdict at the paper's scale. Each condition is an estimate with its 95% "
           "interval (Student's t): where the table's rows share seeds, from the residual variance of the whole "
           "table (rows x seeds, seeds as blocks), with the contrast's own paired interval beside it as a "
           "robustness check (a verdict the two read differently says so); else paired over seeds, or Welch. "
           "The minimum detectable effect at 80% power is the exact one (noncentral t). `inconclusive` means the "
           "interval straddles the threshold (or the noise was not measured); `not applicable` means the "
           "check's premise (e.g. a gap to close) does not hold at that scale; `no learning signal` means "
           "that at a reduced scale a trained row did not "
           "beat the `random-init` control (the same model never trained) beyond the noise, or that no "
           "control ran, so no ordering is read; `not run` means a row the check needs has no result at that "
           "profile. The column *paper's numbers* applies each "
           "check to the values transcribed from the paper: it checks the transcription, it is not "
           "evidence. Claims and checks: `tables/claims.yaml`; method: `repro/results/claims.py`.", ""]
    md += ["## Contents", "", "- [Provenance](#provenance)", "- [Verdicts](#verdicts)",
           "- [Figure 3](#figure-3)", "- [Tables](#tables)", ""]
    md += _provenance_md(found, seen, roots)
    md += ["", '<a id="verdicts"></a>', "", "## Verdicts", ""]
    md += claims_markdown(entries, shown_profiles, claims.scales)
    md += ['<a id="figure-3"></a>', "", "## Figure 3", "",
           "Linear top-1 against the BN batch: the paper's curves (Table 4) and every reproduced profile.", ""]
    png = next(p for p in figure_paths if p.suffix == ".png")
    md += [f"![Figure 3: BN batch robustness]({png.relative_to(out).as_posix()})", ""]
    md += _tables_md(tables, found, seen, {k: p.relative_to(out).as_posix() for k, p in curves.items() if p})
    text = "\n".join(md) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "html": out / "report.html"}
    write_if_changed(paths["md"], text)
    write_if_changed(paths["html"], to_html(text, out))
    return paths


def _provenance_md(found: dict[tuple[str, str], TableResults], seen: list[str], roots: list[Path]) -> list[str]:
    """Per profile: runs done, dates, wall time, commits, hosts and the campaign's machine."""
    md = ['<a id="provenance"></a>', "", "## Provenance", ""]
    if not seen:
        md += ["No run records found under " + ", ".join(f"`{_shown_path(r)}`" for r in roots) + ": every reproduced "
               "verdict is `not run`.", ""]
    for profile in seen:
        prov = runs_provenance([(tr.root, tr.runs, tr.run_dirs) for (_, p), tr in found.items() if p == profile])
        md += [f"- `{profile}`: {prov['runs_done']}/{prov['runs']} runs done"
               + (f", {prov['runs_diverged']} diverged" if prov.get("runs_diverged") else "")
               + (f", first submitted {prov['first_submitted']}, last finished {prov['last_finished']}, "
                  f"wall time {prov['wall_hours']:.2f} h ({prov['train_hours']:.2f} h of training summed over runs)"
                  if "wall_hours" in prov else "")
               + ("; code: " + ", ".join(f"commit `{k}` ({n} run{'' if n == 1 else 's'})" for k, n in prov["commits"].items())
                  if prov["commits"] else "")
               + (f"; hosts: {', '.join(prov['hosts'])}" if prov["hosts"] else "") + "."]
        for root, m in prov["machines"].items():
            mach = m.get("machine", {})
            md.append(f"  - machine (`{_shown_path(Path(root))}/machine.json`): {mach.get('cpu')}, {mach.get('cores')} cores, "
                      f"{mach.get('memory_gib')} GiB, GPU: {mach.get('gpu') or 'none'}, {mach.get('os')}, "
                      f"Python {mach.get('python')}, torch {mach.get('torch')}; campaign `{m.get('command')}` "
                      f"started {m.get('started')} at commit `{(m.get('git') or {}).get('commit', '')[:12]}`.")
    return md


def _tables_md(tables: list[Table], found: dict[tuple[str, str], TableResults], seen: list[str],
              curves: dict[tuple[str, str], str]) -> list[str]:
    """Every paper table: the reproduced values of each profile beside the paper's, or the
    paper's alone; under each profile's values its training curves, where its runs logged any."""
    md = ['<a id="tables"></a>', "", "## Tables", ""]
    for table in tables:
        anchor = output_stem(table)
        md += [f'<a id="{anchor}"></a>', "", f"### {table.title}", "", f"Paper values: {table.source}.", ""]
        trs = [found[(table.name, p)] for p in seen if (table.name, p) in found]
        if not trs:
            md += ["No reproduced results yet; paper values:", ""]
            md += [_paper_only(table).to_markdown(index=False), ""]
        for tr in trs:
            shown = display_frame(tr.table, tr.summary, tr.profile)
            md += [f"Profile `{tr.profile}` ({done_text(tr.runs)}): "
                   f"{' '.join(tr.table.profiles[tr.profile].description.split())}", "",
                   shown.to_markdown(index=False), ""]
            if (tr.runs["status"] == Status.DIVERGED).any():
                md += [run_notes(tr.runs[tr.runs["status"] == Status.DIVERGED]).strip(), ""]
            if (table.name, tr.profile) in curves:
                md += [f"![Training curves of {output_stem(table)} at profile {tr.profile}: loss against step]"
                       f"({curves[(table.name, tr.profile)]})", ""]
    return md


def _paper_only(table: Table) -> pd.DataFrame:
    cols = {"Row": [r.label for r in table.rows]}
    for col, spec in table.columns.items():
        cols[f"{spec.label} (paper)"] = ["-" if r.paper.get(col) is None else f"{r.paper[col]:g}" for r in table.rows]
    return pd.DataFrame(cols)


CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f5f5f5; padding: 0 0.2em; }
.verdict { padding: 0.05em 0.4em; border-radius: 0.3em; white-space: nowrap; }
.v-supported { background: #d4edda; }
.v-not-supported { background: #f8d7da; }
.v-inconclusive { background: #fff3cd; }
.v-not-run { background: #e2e3e5; }
.v-not-applicable { background: #e2e3e5; }
.v-no-learning-signal { background: #f5d5b8; }
"""


def to_html(markdown_text: str, base: Path) -> str:
    """The report as one page: Markdown rendered, figures inlined as data URIs."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")

    def inline(m: re.Match) -> str:
        src = m.group(2)
        path = base / src
        if not path.is_file():
            raise ConfigError(f"report: figure {path} is missing")
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{m.group(1)}data:image/png;base64,{data}{m.group(3)}'

    body = re.sub(r'(<img[^>]*\bsrc=")([^"]+\.png)(")', inline, body)
    title = "Momentum² Teacher: claims report"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
