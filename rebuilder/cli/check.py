"""``hermetic check``: builds under variations; exit 0 reproducible, 1 not, 2 error."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from rebuilder.cli.build import sandbox_config
from rebuilder.cli.common import (
    EXIT_ERROR,
    EXIT_NEGATIVE,
    EXIT_OK,
    AllowRootOption,
    JsonOption,
    SignOption,
    SourceOption,
    SpecArgument,
    TraceOption,
    guarded,
    load_signers,
    reaping,
    signature_note,
)
from rebuilder.cli.output import Output, Report


def _check_progress() -> Any:
    from rebuilder.progress import LiveCheckProgress, PlainCheckProgress

    return LiveCheckProgress() if sys.stderr.isatty() else PlainCheckProgress()


def check(
    ctx: typer.Context,
    spec: SpecArgument = Path(),
    builds: Annotated[
        int,
        typer.Option(
            "--builds", min=2, metavar="N", help="Builds: one control, the rest experiments."
        ),
    ] = 2,
    vary: Annotated[
        str | None,
        typer.Option(
            "--vary",
            metavar="LIST",
            help="-name removes one, +name adds one, a,b sets them (default: all).",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", metavar="N", help="Repeat a check's random choices.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", min=1, metavar="N", help="Builds at once (default: 2, or 1 CPU: 1)."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", metavar="DIR", help="Directory for builds and reports."),
    ] = None,
    source: SourceOption = None,
    trace: TraceOption = None,
    json_output: JsonOption = False,
    against: Annotated[
        list[str] | None,
        typer.Option(
            "--against",
            metavar="URL#sha256=HEX",
            help="A published artifact to compare with the output of its name; repeatable.",
        ),
    ] = None,
    sign: SignOption = None,
    allow_root: AllowRootOption = False,
) -> None:
    """Build under variations and find what breaks reproducibility. Exit 0 / 1 / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder import render
        from rebuilder.against import Published, compare_published
        from rebuilder.attest.attestor import signed_envelope
        from rebuilder.attest.check_statement import CHECK_ATTESTATION_FILE, check_statement
        from rebuilder.attest.envelope import write_envelope
        from rebuilder.check import CheckRequest, prepare_report_dir, run_check
        from rebuilder.variations import parse_vary
        from sandbox import connect_backend
        from sandbox.build import ARTIFACTS_DIR
        from sandbox.image_build import prepare_image
        from sandbox.spec import Spec
        from sandbox.store import ContentStore

        settings = cli.settings()
        parsed = Spec.from_toml(spec, source_dir=source.resolve() if source else None)
        published = [Published.parse(text) for text in against or []]
        config = sandbox_config(settings, allow_root)
        signers = load_signers(settings.signing.signing_references(sign or []))
        variations = parse_vary(vary)
        import secrets

        chosen_seed = seed if seed is not None else secrets.randbelow(2**31)
        report_dir = prepare_report_dir(report, Path.cwd())
        request = CheckRequest(
            spec=parsed,
            report_dir=report_dir,
            variations=variations,
            seed=chosen_seed,
            builds=builds,
            jobs=jobs if jobs is not None else min(2, len(os.sched_getaffinity(0))),
            trace=trace or config.trace,
        )
        with (
            connect_backend(config) as backend,
            reaping(backend, config.work_dir, output),
            _check_progress() as progress,
        ):
            store = backend.image_store()
            if store is not None:  # build (by its lock) or pull the image first, once
                prepare_image(parsed, config=config, store=store)
            result = run_check(
                request, config=config, backend=backend, observer=progress, euid=settings.euid
            )
        payload = check_statement(
            result, builder_id=settings.signing.local_builder_id(), now=datetime.now(tz=UTC)
        )
        envelope, error = signed_envelope(payload, signers)
        write_envelope(report_dir / CHECK_ATTESTATION_FILE, envelope)
        control = result.builds[0].result
        comparisons = [
            compare_published(
                item,
                artifacts=Path(control.out_dir) / ARTIFACTS_DIR,
                outputs=control.outputs,
                store=ContentStore(config.store_dir),
                report_dir=report_dir,
            )
            for item in published
            if control.built
        ]
        document = result.to_json()
        if published:
            document["against"] = [c.to_json() for c in comparisons]

        def text() -> str:
            lines = [render.check_summary(result)]
            lines.append(
                f"attest  {report_dir / CHECK_ATTESTATION_FILE} ({signature_note(signers, error)})"
            )
            for c in comparisons:
                said = "MATCHES" if c.matches else "DIFFERS from"
                diff = c.report.text if c.report and c.report.text else None
                lines.append(
                    f"against {c.output} {said} {c.published.url}" + (f" ({diff})" if diff else "")
                )
            return "\n".join(lines)

        output.result(Report(document, text))
        if error:
            output.note(f"hermetic: error: {error}; results kept in {report_dir}")
            raise typer.Exit(EXIT_ERROR)
        same = all(c.matches for c in comparisons) and len(comparisons) == len(published)
        raise typer.Exit(EXIT_OK if result.reproducible and same else EXIT_NEGATIVE)
