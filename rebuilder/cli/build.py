"""``hermetic build``: one hermetic build; exit 0 built, 1 not built, 2 error."""

from __future__ import annotations

import sys
import threading
from contextlib import suppress
from dataclasses import replace
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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

if TYPE_CHECKING:
    from rebuilder.cli.settings import Settings
    from sandbox.config import SandboxConfig


def sandbox_config(settings: Settings, allow_root: bool) -> SandboxConfig:
    """The sandbox settings, with ``--allow-root`` applied; refuses root unless allowed."""
    from sandbox.build import refuse_root

    config = replace(settings.sandbox, allow_root=True) if allow_root else settings.sandbox
    refuse_root(config, euid=settings.euid)
    return config


def warm_attestation_imports() -> None:
    """Import, on a daemon thread, the in-toto models (protobuf) that attesting the build
    needs afterwards: the main thread mostly waits on podman meanwhile, so the import
    costs the command nothing. A failing import fails again, reported, where it is used."""

    def load() -> None:
        with suppress(Exception):  # the later import reports what failed
            import_module("rebuilder.attest.statement")

    threading.Thread(target=load, name="hermetic-warm-imports", daemon=True).start()


def progress_display() -> Any:
    """A live panel on a terminal, one line per stage otherwise (both on stderr)."""
    from rebuilder.progress import LiveProgress, PlainProgress

    return LiveProgress() if sys.stderr.isatty() else PlainProgress()


def build(
    ctx: typer.Context,
    spec: SpecArgument = Path(),
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Directory for the results.")
    ] = None,
    source: SourceOption = None,
    json_output: JsonOption = False,
    trace: TraceOption = None,
    sign: SignOption = None,
    update_lock: Annotated[
        bool,
        typer.Option("--update-lock", help="Write a missing or stale image lock of a recipe."),
    ] = False,
    sbom_format: Annotated[
        str,
        typer.Option(
            "--sbom-format",
            metavar="spdx|cyclonedx",
            help="spdx (sbom.spdx.json, default) or cyclonedx (sbom.cdx.json).",
        ),
    ] = "spdx",
    allow_root: AllowRootOption = False,
) -> None:
    """Run one hermetic build. Exit 0 built, 1 not built, 2 error (also: signing failed)."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder import render
        from rebuilder.attest.attestor import BuildAttestor
        from rebuilder.attest.provenance import PROVENANCE_FILE
        from rebuilder.sbom import SbomFormat, SbomWriter, image_contents
        from sandbox import connect_backend
        from sandbox.build import BuildRequest, default_out_dir, new_build_id, run_build
        from sandbox.result import BuildResult
        from sandbox.spec import Spec

        try:
            chosen_format = SbomFormat(sbom_format.lower())
        except ValueError:
            raise typer.BadParameter(
                f"{sbom_format!r}: expected spdx or cyclonedx", param_hint="'--sbom-format'"
            ) from None
        settings = cli.settings()
        parsed = Spec.from_toml(spec, source_dir=source.resolve() if source else None)
        config = sandbox_config(settings, allow_root)
        signers = load_signers(settings.signing.signing_references(sign or []))
        attestor = BuildAttestor(
            signers=signers,
            builder_id=settings.signing.local_builder_id(),
            spec_document=parsed.document,
            spec_sha256=parsed.sha256,
            source_dir=parsed.source_dir,
            euid=settings.euid,
        )
        sbom = SbomWriter(
            image=lambda result: image_contents(parsed, result.image, config),
            sbom_format=chosen_format,
            signers=signers,
        )

        def attest(result: BuildResult, directory: Path) -> None:
            attestor(result, directory)
            sbom(result, directory)

        build_id = new_build_id()
        out_dir = (out or default_out_dir(Path.cwd(), build_id)).resolve()
        request = BuildRequest(
            spec=parsed,
            out_dir=out_dir,
            trace=trace or config.trace,
            attest=attest,
            prepare_image=True,
            update_lock=update_lock,
        )
        warm_attestation_imports()
        with (
            connect_backend(config) as backend,
            reaping(backend, config.work_dir, output),
            progress_display() as progress,
        ):
            result = run_build(
                request,
                config=config,
                backend=backend,
                observer=progress,
                build_id=build_id,
                euid=settings.euid,
            )

        def text() -> str:
            lines = [render.build_summary(result, log_tail=render.log_tail(result.log.path))]
            if attestor.written:
                note = signature_note(signers, attestor.error)
                lines.append(f"attest  {out_dir / PROVENANCE_FILE} ({note})")
            lines.extend(f"sbom    {out_dir / name}" for name in sbom.written)
            return "\n".join(lines)

        output.result(Report(result.to_json(), text))
        error = attestor.error or sbom.error
        if error:
            output.note(f"hermetic: error: {error}; results kept in {out_dir}")
            raise typer.Exit(EXIT_ERROR)
        raise typer.Exit(EXIT_OK if result.built else EXIT_NEGATIVE)
