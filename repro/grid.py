"""Paper tables as declarative grid files, expanded into runs by a pure function.

A table file (``tables/tNN_*.yaml``) holds the paper's rows with the values transcribed
from the paper, and profiles (``paper``, ``local``, ``smoke``...) that say at which scale to
run them. ``expand`` turns (table, profile) into :class:`Run` objects whose ids are stable
hashes of the semantic config: relaunching the same grid finds the same run directories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (ConfigError, RunConfig, config_hash, from_dict, load_config, load_yaml, merge, task_view, to_dict,
                     undot)
from .paths import data_dir

TABLES_DIR = data_dir("tables")


@dataclass(frozen=True)
class Column:
    label: str  # header in the rendered table


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    set: dict[str, Any] = field(default_factory=dict)  # dotted config keys for this row
    paper: dict[str, float | None] = field(default_factory=dict)  # transcribed from the paper
    run: bool = True  # False: a literature row, shown with its paper values only
    # The profiles that run this row (None: every profile that does not leave it out with
    # `only`). A control such as `random-init` runs only at the reduced scales that need it.
    profiles: list[str] | None = None


@dataclass(frozen=True)
class Profile:
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)  # nested overrides of the task's config (repro/config.py)
    extends: str | None = None  # a shared profile of tables/profiles.yaml, merged under `base`
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # row id -> dotted overrides here
    seeds: list[int] = field(default_factory=lambda: [0])
    budget_minutes: float | None = None  # expected wall time of the whole table on its machine
    only: list[str] | None = None  # row ids this profile runs (None: every row); the rest show paper values
    # The paper's protocol (its data, network, schedule and BN statistics), so its numbers compare
    # with the paper's: no random-init control needed, a difference to the paper drawn. The
    # profile named `paper` is; others say so (e.g. Table 1's paper-1x64 on emulated devices).
    paper_scale: bool = False

    def runs_row(self, row: Row) -> bool:
        return row.run and (self.only is None or row.id in self.only)


PAPER_PROFILE = "paper"  # the profile of the paper's protocol in every table


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    source: str  # where in the paper the values come from, and any OCR repair
    columns: dict[str, Column]
    rows: list[Row]
    profiles: dict[str, Profile]
    reference_row: str | None = None  # denominator of the sec/iter ratio

    def is_paper_scale(self, profile: str) -> bool:
        """Whether ``profile`` runs the paper's protocol (see ``Profile.paper_scale``)."""
        return profile == PAPER_PROFILE or (profile in self.profiles and self.profiles[profile].paper_scale)


@dataclass(frozen=True)
class Run:
    table: str
    profile: str
    row: str
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return f"{self.row}-s{self.seed}-{config_hash(self.config)}"

    def run_dir(self, runs_root: str | Path) -> Path:
        return Path(runs_root) / self.table / self.profile / self.run_id


def table_path(name: str, tables_dir: str | Path = TABLES_DIR) -> Path:
    """``t01`` -> ``tables/t01_stl10_bn.yaml`` (a path is returned as is)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    matches = sorted(Path(tables_dir).glob(f"{name}_*.yaml")) + sorted(Path(tables_dir).glob(f"{name}.yaml"))
    if not matches:
        known = sorted(q.stem.split("_")[0] for q in Path(tables_dir).glob("t*.yaml"))
        raise ConfigError(f"unknown table {name!r}; known tables: {', '.join(known) or 'none'}")
    return matches[0]


def shared_profiles(tables_dir: str | Path = TABLES_DIR) -> dict[str, Profile]:
    """The named base profiles that several tables share (``tables/profiles.yaml``)."""
    path = Path(tables_dir) / "profiles.yaml"
    data = load_yaml(path) if path.is_file() else {}
    try:
        return from_dict(_SharedProfiles, {"profiles": data or {}}).profiles
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


@dataclass(frozen=True)
class _SharedProfiles:
    profiles: dict[str, Profile]


def _resolve(profile: Profile, shared: dict[str, Profile], where: str) -> Profile:
    if profile.extends is None:
        return profile
    if profile.extends not in shared:
        raise ConfigError(f"{where}.extends: no shared profile {profile.extends!r} in tables/profiles.yaml "
                          f"(known: {', '.join(shared)})")
    parent = _resolve(shared[profile.extends], shared, f"profiles.yaml:{profile.extends}")
    # A transfer profile takes from a (pre-training) shared profile only the keys its task's config has.
    task = profile.base.get("task", parent.base.get("task", "pretrain"))
    inherited = task_view(parent.base, task) if isinstance(task, str) else parent.base
    return Profile(description=profile.description or parent.description, base=merge(inherited, profile.base),
                   seeds=profile.seeds, budget_minutes=profile.budget_minutes if profile.budget_minutes is not None
                   else parent.budget_minutes, rows=profile.rows,
                   only=profile.only if profile.only is not None else parent.only,
                   paper_scale=profile.paper_scale or parent.paper_scale)


def load_table(name: str | Path, tables_dir: str | Path = TABLES_DIR) -> Table:
    path = table_path(str(name), tables_dir)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        table = from_dict(Table, data)
        shared = shared_profiles(TABLES_DIR)
        resolved = {k: _resolve(v, shared, f"profiles.{k}") for k, v in table.profiles.items()}
        table = Table(**{**table.__dict__, "profiles": resolved})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    ids = [r.id for r in table.rows]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: row ids must be unique, got {ids}")
    if table.reference_row is not None and table.reference_row not in ids:
        raise ConfigError(f"{path}: reference_row {table.reference_row!r} is not a row id")
    for row in table.rows:
        bad = [k for k in row.paper if k not in table.columns]
        if bad:
            raise ConfigError(f"{path}: rows.{row.id}.paper.{bad[0]}: not a column ({', '.join(table.columns)})")
    for row in table.rows:
        bad = [p for p in row.profiles or [] if p not in table.profiles]
        if bad:
            raise ConfigError(f"{path}: rows.{row.id}.profiles: {bad[0]!r} is not a profile ({', '.join(table.profiles)})")
    table = _restrict_rows(table)
    for name, profile in table.profiles.items():
        bad = [r for r in profile.rows if r not in ids]
        if bad:
            raise ConfigError(f"{path}: profiles.{name}.rows.{bad[0]}: not a row id")
        bad = [r for r in profile.only or [] if r not in ids]
        if bad:
            raise ConfigError(f"{path}: profiles.{name}.only: {bad[0]!r} is not a row id ({', '.join(ids)})")
    for profile in table.profiles:  # every row of every profile must build a valid config
        try:
            expand(table, profile)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return table


def _restrict_rows(table: Table) -> Table:
    """Each row's ``profiles`` folded into the profiles' ``only`` lists (one rule for which rows run)."""
    limited = [r for r in table.rows if r.profiles is not None]
    if not limited:
        return table
    profiles = {}
    for name, prof in table.profiles.items():
        drop = {r.id for r in limited if name not in r.profiles}
        if drop:
            keep = prof.only if prof.only is not None else [r.id for r in table.rows]
            prof = Profile(**{**prof.__dict__, "only": [r for r in keep if r not in drop]})
        profiles[name] = prof
    return Table(**{**table.__dict__, "profiles": profiles})


def expand(table: Table, profile: str) -> list[Run]:
    """The runs of ``table`` at ``profile``: one per row and seed, in table order."""
    if profile not in table.profiles:
        raise ConfigError(
            f"unknown profile {profile!r} for table {table.name}; choose one of {', '.join(table.profiles)}"
        )
    prof = table.profiles[profile]
    runs = []
    for row in table.rows:
        if not prof.runs_row(row):
            continue
        for seed in prof.seeds:
            nested = merge(merge(prof.base, undot(row.set)), undot(prof.rows.get(row.id, {})))
            nested = merge(nested, {"train": {"seed": seed}})
            try:
                cfg = load_config(nested)
            except ConfigError as e:
                raise ConfigError(f"profile {profile}, row {row.id}: {e}") from None
            runs.append(Run(table.name, profile, row.id, seed, cfg))
    return runs


def with_overrides(run: Run, overrides: dict) -> Run:
    """A copy of ``run`` with nested overrides (e.g. the user's data root) applied."""
    cfg = load_config(merge(to_dict(run.config), overrides))
    return Run(run.table, run.profile, run.row, run.seed, cfg)
