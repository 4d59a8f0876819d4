"""Helpers shared by every benchmark: the one markdown table printer, target verdicts, the
command-line ending (run, print the table, write JSON, one-line errors) and a description of
the machine the figures were measured on. No I/O except /proc/cpuinfo and the --json file."""
from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

PASS, MISS, NOT_MEASURED, REPORTED = "PASS", "MISS", "n/a", "reported"


@dataclass(frozen=True)
class TargetCheck:
    """One measured figure against a target named in the issue.

    comparison: "<=", "<", ">=", "==" (value OP target), or "report" for a figure the issue asks
    for without a threshold; value None means not measured.
    """

    measure: str
    value: float | None
    comparison: str
    target: float
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.comparison not in ("<=", "<", ">=", "==", "report"):
            raise ValueError(f"comparison must be <=, <, >=, == or report, got {self.comparison!r}")

    @property
    def verdict(self) -> str:
        if self.value is None:
            return NOT_MEASURED
        if self.comparison == "report":
            return REPORTED
        ok = {"<=": self.value <= self.target, "<": self.value < self.target,
              ">=": self.value >= self.target, "==": self.value == self.target}[self.comparison]
        return PASS if ok else MISS

    @property
    def target_text(self) -> str:
        if self.comparison == "report":
            return "report"
        return f"{self.comparison} {self.target:g} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "value": self.value, "target": self.target_text,
                "unit": self.unit, "verdict": self.verdict, "note": self.note}


def fmt(value: Any, digits: int = 1) -> str:
    """Table cell text: floats rounded, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A GitHub markdown table; cells go through fmt() (strings stay as they are).

    align: one letter per column, "l" or "r" (right-aligned "---:"); default all plain "---"."""
    rules = ["---:" if align[i:i + 1] == "r" else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def measure_table(result: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """measure | value, one row per key of `result` (values printed as they are)."""
    return markdown_table(("measure", "value"), [(key, str(value)) for key, value in result.items() if key not in skip])


def finish_cli(compute: Callable[[], Any], table: Callable[[Any], str], json_path: str | Path | None,
               errors: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError), indent: int = 2) -> int:
    """The end of every bench main(): compute, print the table, write --json; a user error -> one line, 2."""
    from models.bundle import BundleError

    try:
        result = compute()
    except (*errors, BundleError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=indent) + "\n", encoding="utf-8")
    return 0


def targets_table(checks: Sequence[TargetCheck]) -> str:
    """measure | value | target | verdict | note."""
    def value_text(value: float) -> str:   # ratios near a 1.3 target need two decimals
        return fmt(float(value), 2 if abs(value) < 10 else 1) if isinstance(value, float) else fmt(value)

    rows = [(c.measure, f"{value_text(c.value)} {c.unit}".strip() if c.value is not None else "-",
             c.target_text, c.verdict, c.note) for c in checks]
    return markdown_table(("measure", "value", "target", "verdict", "note"), rows)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() as a fallback)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(torch_threads: int) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, load, Python/torch versions, torch threads."""
    try:
        import torch

        torch_version = torch.__version__
        cuda = torch.cuda.is_available()
    except ImportError:
        torch_version, cuda = "not installed", False
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "torch": torch_version, "torch_threads": torch_threads, "cuda": cuda,
            "platform": platform.platform()}
