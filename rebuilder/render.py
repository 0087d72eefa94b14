"""Formatters: results as terminal text. Each returns a string; the CLI prints it.

Every text that came from a build, a node or an attestation (output names, link
targets, reasons, command lines, log lines) goes through :func:`shown`: a name with a
newline, a carriage return or a terminal escape in it cannot forge a line of the
summary or rewrite the terminal.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.units import format_size

if TYPE_CHECKING:  # a formatter loads only what its command already loaded
    from rebuilder.attest.verify import Verification
    from rebuilder.check import CheckResult
    from rebuilder.compare import Difference
    from rebuilder.gate.decide import Decision
    from rebuilder.hints import Hint
    from rebuilder.rebuild import RebuildResult
    from sandbox.image_build import ImageBuildOutcome
    from sandbox.images import ImageDefinition
    from sandbox.result import BuildResult

# Control characters (C0, DEL, C1), line and paragraph separators, bidirectional
# overrides and isolates, and lone surrogates (undecodable bytes of a name).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_IN_LOG = re.compile(_UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x08\x0a-\x1f"))


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object) -> str:
    """``value`` as one line of plain text: every character that could break the line
    or drive the terminal is written as an escape (``\\n`` as ``\\x0a``)."""
    return _UNSAFE.sub(_escaped, str(value))


def _log_line(line: str) -> str:
    return _UNSAFE_IN_LOG.sub(_escaped, line)


def build_summary(result: BuildResult, *, log_tail: str = "") -> str:
    """What a person reads after ``hermetic build``."""
    lines = []
    if result.built:
        lines.append(f"built {result.digest and 'sha256:' + result.digest}")
    else:
        lines.append(f"NOT BUILT ({result.status.value}): {shown(result.reason)}")
    for item in result.outputs:
        link = f" -> {shown(item.target)}" if item.target is not None else ""
        lines.append(
            f"  {item.sha256[:16]}  {item.size:>10}  {item.mode:04o}  {shown(item.path)}{link}"
        )
    lines.append(f"image   {result.image}")
    lines.append(f"source  sha256:{result.source_digest}")
    for record in result.inputs:
        how = "fetched" if record.fetched else "from store"
        lines.append(f"input   {shown(record.dest)} sha256:{record.sha256[:16]}… ({how})")
    limits = ", ".join(
        f"{limit.name} {_limit_value(limit.value, limit.unit)} "
        f"[{'+'.join(e.value for e in limit.enforced_by)}]"
        for limit in result.limits
    )
    lines.append(f"limits  {limits}")
    usage = result.resources
    lines.append(
        f"used    {result.duration_s:.1f}s wall, {usage.cpu_seconds:.1f}s cpu, "
        f"peak {format_size(usage.peak_memory_bytes)} rss, {usage.tasks_started} tasks"
    )
    lines.append(f"trace   {_trace_line(result.trace)}")
    truncated = " (truncated)" if result.log.truncated else ""
    lines.append(f"log     {result.log.path}{truncated}")
    lines.append(f"results {result.out_dir}")
    if log_tail and not result.built:
        lines.append("last lines of the build log:")
        lines.extend(f"  | {_log_line(line)}" for line in log_tail.splitlines())
    return "\n".join(lines)


def _trace_line(trace: dict[str, Any]) -> str:
    if "file" not in trace:
        return str(trace.get("level", "off"))
    sources: dict[str, int] = trace.get("nondeterminism") or {}
    touched = ", ".join(f"{name} {count}" for name, count in sources.items()) or "none"
    gaps = "" if trace.get("complete") else " (incomplete: see gaps in trace.json)"
    return (
        f"{trace['level']}: {trace['executions']} programs run, {trace['files_written']} files "
        f"written, {trace['network_attempts']} network attempts; nondeterminism: {touched}; "
        f"{trace['file']}{gaps}"
    )


def _limit_value(value: int, unit: str) -> str:
    if unit == "bytes":
        return format_size(value)
    if unit == "s":
        return f"{value}s"
    return str(value)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file (empty when unreadable)."""
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def image_list(definitions: list[ImageDefinition], loaded: dict[str, bool]) -> str:
    """The table of ``hermetic image list``."""
    rows = [("NAME", "LOCKED DIGEST", "LOADED", "DESCRIPTION")]
    for definition in definitions:
        lock = definition.lock
        digest = f"sha256:{lock.image_digest[:16]}…" if lock else "(no lock)"
        if lock and lock.recipe_digest != definition.recipe.digest:
            digest += " (stale: recipe changed)"
        rows.append(
            (
                definition.name,
                digest,
                "yes" if loaded.get(definition.name) else "no",
                definition.recipe.description,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()
        for row in rows
    )


def image_outcome(outcome: ImageBuildOutcome, definition: ImageDefinition) -> str:
    """What ``hermetic image build`` says."""
    from sandbox.image_build import ImageBuildStatus

    built = outcome.built
    messages = {
        ImageBuildStatus.ALREADY_LOADED: "already loaded; matches its lock",
        ImageBuildStatus.MATCHES_LOCK: "built; matches its lock; loaded",
        ImageBuildStatus.LOCKED: "built; lock written; loaded",
        ImageBuildStatus.MISMATCH: "built, but does NOT match its lock; not loaded",
    }
    lines = [f"{definition.source or built.name}: {messages[outcome.status]}"]
    lines.append(f"  {built.reference}")
    if outcome.status is ImageBuildStatus.LOCKED:
        lines.append(f"  lock {definition.lock_path}")
    lines.append(f"  image id sha256:{built.config_digest}  rootfs sha256:{built.rootfs_digest}")
    if outcome.status is ImageBuildStatus.MISMATCH and outcome.recorded is not None:
        lines.append(f"  lock says sha256:{outcome.recorded.image_digest}")
        changes = outcome.package_changes()
        if changes:
            lines.append("  package versions that differ from the lock:")
            lines.extend(f"    {change}" for change in changes)
        else:
            lines.append("  same package versions; the recipe or the image format changed")
        lines.append(
            f"  if the new image is the one you trust: {definition.build_command} "
            "--update-lock, then commit the lock"
        )
    return "\n".join(lines)


def _difference(difference: Difference) -> str:
    control, other = difference.control, difference.other
    if control is None or other is None:
        missing = "control" if control is None else "experiment"
        present = other or control
        digest = f"sha256:{present.sha256[:16]}…" if present else ""
        return f"{shown(difference.path)}: missing in the {missing} build; the other has {digest}"
    mode = f"mode {control.mode:04o} → {other.mode:04o}"
    if difference.kind == "mode":
        return f"{shown(difference.path)}: {mode}, same content (the executable bit counts)"
    changed = f", {mode}" if difference.mode_changed else ""
    return (
        f"{shown(difference.path)}: sha256:{control.sha256[:16]}… → sha256:{other.sha256[:16]}…"
        f" ({control.size} → {other.size} bytes){changed}"
    )


_SHOWN_SOURCES = 5


def _oneline(text: str, width: int) -> str:
    """A command line for one terminal line: whitespace runs (newlines too) as one space."""
    flat = shown(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _hint(hint: Hint) -> list[str]:
    from rebuilder.evidence import MARK_NOUNS

    lines = [f"  {shown(hint.path)}"]
    for item in hint.embedded:
        times = f" ({item.count} times)" if item.count > 1 else ""
        lines.append(
            f"    contains {MARK_NOUNS.get(item.variation, item.variation)} "
            f"{shown(repr(item.value))}{times} [{shown(item.variation)}]"
        )
    if hint.modes:
        lines.append(f"    mode {hint.modes[0]} → {hint.modes[1]}: executable in one build only")
    if hint.writer:
        argv = _oneline(" ".join(hint.writer["argv"]), 120)
        lines.append(f"    written by `{argv}` (pid {shown(hint.writer['pid'])})")
    # One line per process and kind of source: make listing 40 directories is one fact.
    grouped: dict[tuple[str, int | None, str, str], list[str]] = {}
    for source in hint.sources:
        key = (source.source, source.pid, source.program, source.relation)
        grouped.setdefault(key, []).append(source.detail)
    for (kind, pid, program, relation), details in list(grouped.items())[:_SHOWN_SOURCES]:
        named = [d for d in details if d]
        detail = f" {shown(named[0])}" if named else ""
        if len(named) > 1:
            detail += f" and {len(named) - 1} more"
        lines.append(
            f"    {shown(kind)}{detail}: `{_oneline(program, 80)}` (pid {pid}, {shown(relation)})"
        )
    if len(grouped) > _SHOWN_SOURCES:
        lines.append(f"    … {len(grouped) - _SHOWN_SOURCES} more in check.json")
    if hint.writer and not hint.sources:
        lines.append(
            "    its writer and that one's parents touched no traced nondeterminism source"
        )
    return lines


def check_summary(result: CheckResult) -> str:
    """What a person reads after ``hermetic check``: the verdict, then why."""
    from rebuilder.check import INHERENT

    lines = []
    if result.reproducible:
        lines.append(f"REPRODUCIBLE: {len(result.builds)} builds agree bit for bit")
    else:
        culprits = ", ".join(result.culprits) or "unknown"
        if list(result.culprits) == [INHERENT]:
            culprits += " (two builds with nothing varied differ)"
        count = len(result.differences)
        lines.append(
            f"NOT REPRODUCIBLE: {count} output{'s' if count != 1 else ''} "
            f"differ{'s' if count == 1 else ''}; culprit{'s' if len(result.culprits) > 1 else ''}: "
            f"{culprits}"
        )
        if result.hints:
            lines.append("why:")
        for hint in result.hints:
            lines.extend(_hint(hint))
        lines.append("differences:")
        lines.extend(f"  {_difference(d)}" for d in result.differences)
    for note in result.notes:
        lines.append(f"note: {shown(note)}")
    varied = ", ".join(result.variations)
    lines.append(f"varied  {varied}")
    for name, reason in result.skipped.items():
        lines.append(f"skipped {name}: {shown(reason)}")
    roles = Counter(build.role for build in result.builds)
    lines.append(
        f"builds  {len(result.builds)} ({', '.join(f'{n} {role}' for role, n in roles.items())}), "
        f"{result.duration_s:.1f}s, seed {result.seed} (--seed {result.seed} repeats it)"
    )
    if result.report and result.report.html:
        lines.append(f"report  {result.report.html}")
    elif result.report and result.report.error:
        lines.append(f"report  none: {result.report.error}")
    lines.append(f"results {result.report_dir}")
    return "\n".join(lines)


def verification(outcome: Verification) -> str:
    """What ``hermetic verify`` says: the verdict, then each reason or what matched."""
    statement = outcome.statement
    subjects = statement.subjects if statement else ()
    if outcome.ok:
        signed = ", ".join(keyid[:16] + "…" for keyid in outcome.signed_by)
        lines = [
            f"VERIFIED: {outcome.path}",
            f"  signed by {len(outcome.signed_by)} key(s) (threshold {outcome.threshold}): "
            f"{signed}",
            f"  predicate {shown(statement and statement.predicate_type)}, "
            f"{len(subjects)} subject(s)",
        ]
        lines.extend(f"  {shown(path)} = subject {shown(name)}" for path, name in outcome.matched)
        return "\n".join(lines)
    lines = [f"NOT VERIFIED: {outcome.path}"]
    lines.extend(f"  {shown(reason)}" for reason in outcome.reasons)
    return "\n".join(lines)


def rebuild_summary(result: RebuildResult) -> str:
    """What ``hermetic rebuild`` says: the verdict, then each node."""
    agreeing = sum(1 for node in result.nodes if node.verdict == "agree")
    if result.agreed:
        lines = [
            f"AGREED: {agreeing} of {len(result.nodes)} nodes reproduced "
            f"{len(result.outputs)} output(s) bit for bit; {result.signatures} co-signed "
            f"(threshold {result.threshold})"
        ]
    else:
        lines = [
            f"NOT AGREED: {agreeing} of {len(result.nodes)} nodes agree; {result.threshold} needed"
        ]
    for name, digest in result.outputs:
        lines.append(f"  {shown(digest[:16])}  {shown(name)}")
    for node in result.nodes:
        why = f": {shown(node.reason)}" if node.reason else ""
        lines.append(
            f"node {shown(node.name)}  {node.verdict:<9} {shown(node.url)}  "
            f"{shown(node.keyid[:16])}{why}"
        )
        if node.verdict == "disagree":
            for name, digest in node.outputs:
                if (name, digest) not in result.outputs:
                    lines.append(f"    {shown(digest[:16])}  {shown(name)}")
            if node.report and node.report.html:
                lines.append(f"    report {node.report.html}")
    for note in result.notes:
        lines.append(f"note: {shown(note)}")
    if result.attestation:
        lines.append(f"attest  {result.attestation}")
    lines.append(f"results {result.out_dir}")
    return "\n".join(lines)


def gate_decisions(decisions: list[Decision], vsas: dict[str, Path]) -> str:
    """What ``hermetic gate`` says: one verdict per artifact, then why."""
    lines = []
    for decision in decisions:
        who = shown(", ".join(decision.agreeing) or "no trusted operator")
        artifact = shown(decision.artifact)
        if decision.admitted:
            lines.append(f"ADMIT {artifact}  sha256:{decision.sha256[:16]}…  ({who})")
            if decision.artifact in vsas:
                lines.append(f"  vsa {shown(vsas[decision.artifact])}")
        else:
            lines.append(f"DENY  {artifact}  sha256:{decision.sha256[:16]}…")
            lines.extend(f"  - {shown(reason)}" for reason in decision.reasons)
        lines.extend(f"  note: {shown(note)}" for note in decision.notes)
    return "\n".join(lines)
