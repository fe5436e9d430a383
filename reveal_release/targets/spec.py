"""Target specs: TOML data naming a target, its instruction pools, its judge and what to keep."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError

BUILTIN_DIR = Path(__file__).parent / "builtin"
# Bounds on what a spec may name, checked before any model work.
MAX_POOL_BYTES = 1_000_000
MAX_POOL_LINES = 5_000
MAX_LINE_CHARS = 2_000


def instructions_dir() -> Path:
    """The folder of instruction pools: RR_INSTRUCTIONS, else the package's instructions/.

    In a source checkout `reveal_release/instructions` links to the top-level instructions/
    folder; a wheel carries the pools as files in that place.
    """
    env = os.environ.get("RR_INSTRUCTIONS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "instructions"


@dataclass(frozen=True)
class TargetSpec:
    """What to forget and what to keep; a spec is data and never runs code."""

    name: str
    subject: str
    description: str
    judge: str
    judge_params: dict[str, Any]
    reveal_pool: list[str]
    retain_pool: list[str]
    heldout_pool: list[str] = field(default_factory=list)
    heldout_qa: str = ""
    threshold: float = 0.5
    source: str = ""
    # Option values measured to work for this target ([settings.reveal], [settings.release]);
    # an option given on the command line wins.
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def identity(self) -> str:
        """A short string that says which target a run is about."""
        return f"{self.name}:{self.subject}" if self.subject else self.name

    def tags(self) -> tuple[str, ...]:
        """The names a general QA question's `about` list uses for this target."""
        return (self.name, self.identity())

    def probes(self, limit: int = 0) -> list[str]:
        """The held-out probes (the first `limit`, 0: all), or a one-line error when none."""
        if not self.heldout_pool:
            raise RRError(
                f"target '{self.identity()}' has no held-out probes: add a [heldout] pool to its "
                "spec (see instructions/heldout/); nothing was evaluated"
            )
        return list(self.heldout_pool[:limit] if limit else self.heldout_pool)


def apply_settings(
    cfg: Any, spec: TargetSpec, stage: str, explicit: frozenset[str]
) -> tuple[Any, str]:
    """`cfg` with the spec's [settings.STAGE] on the options the user did not give, and those
    settings as flags ('' when none applied)."""
    from reveal_release.options import with_settings

    where = f"target spec {spec.source} [settings.{stage}]"
    cfg, applied = with_settings(cfg, spec.settings.get(stage, {}), explicit, where)

    def shown(v: Any) -> str:
        if isinstance(v, tuple):
            return ",".join(shown(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    return cfg, " ".join(f"--{k.replace('_', '-')} {shown(v)}" for k, v in applied.items())


def read_pool(path: Path, subject: str, what: str) -> list[str]:
    """One instruction per line (blank lines and # comments skipped), {subject} filled in;
    within the size limits, checked before the file is read."""
    if not path.is_file():
        raise RRError(f"{what} instruction pool {path} does not exist: create it or fix the spec")
    if path.stat().st_size > MAX_POOL_BYTES:
        raise RRError(
            f"{what} instruction pool {path} is over {MAX_POOL_BYTES // 1_000_000} MB: "
            f"keep at most {MAX_POOL_LINES} instructions of {MAX_LINE_CHARS} characters"
        )
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise RRError(
            f"{what} instruction pool {path} is not UTF-8 text: save it as UTF-8"
        ) from None
    long = next((n for n, ln in enumerate(lines, 1) if len(ln) > MAX_LINE_CHARS), None)
    if long is not None:
        raise RRError(
            f"{what} instruction pool {path} line {long} is over {MAX_LINE_CHARS} characters: "
            "one short instruction per line"
        )
    if len(lines) > MAX_POOL_LINES:
        raise RRError(
            f"{what} instruction pool {path} has {len(lines)} lines, over {MAX_POOL_LINES}: "
            "keep the instructions that matter"
        )
    pool = [ln.replace("{subject}", subject) for ln in lines if ln and not ln.startswith("#")]
    if not pool:
        raise RRError(f"{what} instruction pool {path} is empty: add one instruction per line")
    return list(dict.fromkeys(pool))


def _pool_path(value: Any, base: Path, source: str, key: str) -> Path:
    """A file a spec names: beside the spec or among the shipped instructions, nowhere else
    (a spec handed over must not read /etc/shadow into a run's forget set)."""
    if not isinstance(value, str) or not value.strip():
        raise RRError(f"target spec {source}: {key} must be a file name, not {value!r}")
    p = Path(value).expanduser()
    beside = p if p.is_absolute() else base / p
    path = beside if beside.exists() else instructions_dir() / p
    resolved = path.resolve()
    roots = (base.resolve(), instructions_dir().resolve())
    if not any(resolved.is_relative_to(root) for root in roots):
        raise RRError(
            f"target spec {source}: {key} = {value!r} is outside the spec's folder and the "
            "shipped instructions: copy the file beside the spec"
        )
    return path


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    """A spec's [key] table (a one-line error when it is a plain value)."""
    value = data[key]
    if not isinstance(value, dict):
        raise RRError(f"target spec {source}: '{key}' must be a table ([{key}]), not {value!r}")
    return value


def _settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The spec's [settings.reveal] and [settings.release] tables (its measured recipe)."""
    settings = data.get("settings", {})
    if not isinstance(settings, dict) or not all(
        k in ("reveal", "release") and isinstance(v, dict) for k, v in settings.items()
    ):
        raise RRError(
            f"target spec {source}: [settings] holds only [settings.reveal] and "
            "[settings.release] tables of option = value"
        )
    return settings


def _threshold(data: dict[str, Any], source: str) -> float:
    """The spec's judge threshold: a number in [0, 1] (0.5 when not given)."""
    threshold = data.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise RRError(
            f"target spec {source}: threshold must be a number in [0, 1], not {threshold!r}"
        )
    if not 0 <= threshold <= 1:
        raise RRError(f"target spec {source}: threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def parse_spec(
    data: dict[str, Any], base: Path, source: str, subject: str | None = None
) -> TargetSpec:
    """Build a TargetSpec from parsed TOML; `base` is where relative pool paths start."""
    try:
        name = str(data["name"])
        judge = _table(data, "judge", source)
        reveal = _table(data, "reveal", source)
        retain = _table(data, "retain", source)
    except KeyError as exc:
        raise RRError(
            f"target spec {source} has no '{exc.args[0]}' section or key: "
            "see reveal_release/targets/builtin/*.toml for the format"
        ) from None
    if "pool" not in reveal:
        raise RRError(f"target spec {source} has no reveal.pool: name an instruction file")
    subject = subject if subject is not None else str(data.get("subject", ""))
    params = {k: v for k, v in judge.items() if k != "name"}
    if subject:
        params.setdefault("subject", subject)
    heldout = _table(data, "heldout", source) if "heldout" in data else {}
    threshold = _threshold(data, source)
    qa_path = _pool_path(heldout["qa"], base, source, "heldout.qa") if "qa" in heldout else None
    if qa_path is not None and not qa_path.is_file():
        raise RRError(
            f"knowledge questions {qa_path} named in {source} do not exist: fix [heldout] qa"
        )
    settings = _settings(data, source)
    return TargetSpec(
        name=name,
        subject=subject,
        description=str(data.get("description", name)),
        judge=str(judge.get("name", name)),
        judge_params=params,
        reveal_pool=read_pool(
            _pool_path(reveal["pool"], base, source, "reveal.pool"), subject, "reveal"
        ),
        retain_pool=read_pool(
            _pool_path(retain.get("pool", "retain.txt"), base, source, "retain.pool"),
            subject,
            "retain",
        ),
        heldout_pool=(
            read_pool(
                _pool_path(heldout["pool"], base, source, "heldout.pool"), subject, "held-out"
            )
            if "pool" in heldout
            else []
        ),
        heldout_qa=str(qa_path) if qa_path is not None else "",
        threshold=float(threshold),
        source=source,
        settings=settings,
    )


def builtin_targets() -> list[str]:
    """Names of the built-in targets (topic takes a subject: topic:<subject>)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_target(target: str) -> TargetSpec:
    """A built-in name (code, person, toxicity, topic:<subject>) or a path to a TOML spec."""
    subject = None
    name = target
    if target.startswith("topic:"):
        name, subject = "topic", target.split(":", 1)[1].strip()
        if not subject:
            raise RRError("topic target needs a subject: --target 'topic:Harry Potter'")
    path = BUILTIN_DIR / f"{name}.toml"
    if not path.is_file():
        path = Path(target).expanduser()
        if not (path.suffix == ".toml" and path.is_file()):
            raise RRError(
                f"unknown target '{target}': use one of {', '.join(builtin_targets())} "
                "(topic as topic:<subject>) or a path to a .toml target spec"
            )
        subject = None
    if path.stat().st_size > MAX_POOL_BYTES:
        raise RRError(f"target spec {path} is over {MAX_POOL_BYTES // 1_000_000} MB: not a spec")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RRError(f"target spec {path} is not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise RRError(f"target spec {path} is not UTF-8 text: save it as UTF-8") from None
    if name == "topic" and path.parent == BUILTIN_DIR and not subject:
        raise RRError("topic target needs a subject: --target 'topic:Harry Potter'")
    return parse_spec(data, path.parent, str(path), subject)
