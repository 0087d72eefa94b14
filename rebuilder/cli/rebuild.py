"""``hermetic rebuild``: independent nodes rebuild a spec; K agreeing co-sign. Exit 0/1/2."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rebuilder.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    JsonOption,
    SpecArgument,
    TokenOption,
    guarded,
)
from rebuilder.cli.output import Output, Report

if TYPE_CHECKING:
    from rebuilder.rebuild import NodeReport


def rebuild(
    ctx: typer.Context,
    spec: SpecArgument = Path(),
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node", metavar="URL[=PUBKEY]", help="A node; =PUBKEY pins its key; repeatable."
        ),
    ] = None,
    threshold: Annotated[
        int, typer.Option("--threshold", min=1, metavar="K", help="Nodes that must agree.")
    ] = 2,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Directory for the results.")
    ] = None,
    token: TokenOption = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="Client certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="FILE", help="Client key.")
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", metavar="FILE", help="CA of the nodes.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="S", help="Seconds to wait.")
    ] = 3600.0,
    json_output: JsonOption = False,
) -> None:
    """Rebuild on independent nodes; K agreeing nodes co-sign one statement. Exit 0 / 1 / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder import render
        from rebuilder.attest.keys import load_public_key
        from rebuilder.node.client import Credentials
        from rebuilder.rebuild import NodeTarget, RebuildError
        from rebuilder.rebuild import rebuild as rebuild_on_nodes
        from sandbox.build import new_build_id
        from sandbox.spec import Spec

        settings = cli.settings()
        parsed = Spec.from_toml(spec)
        if parsed.path.name != "hermetic.toml":
            raise RebuildError(
                f"{parsed.path}: nodes build the hermetic.toml at the root of the directory "
                "sent; name the spec hermetic.toml"
            )
        targets = [NodeTarget.parse(item) for item in node or []]
        for target in targets:
            if target.key_file is not None:
                load_public_key(target.key_file)  # an unusable pinned key stops us now
        if not targets:
            raise RebuildError("name the nodes: --node URL (repeatable)")
        if threshold > len(targets):
            raise RebuildError(f"--threshold {threshold} is more than the {len(targets)} nodes")
        credentials = Credentials(
            token=token or settings.node.token,
            client_cert=tls_cert,
            client_key=tls_key,
            ca=tls_ca,
        )
        out_dir = (out or Path.cwd() / "hermetic-rebuild" / new_build_id()).resolve()

        def progress(report: NodeReport) -> None:
            reason = report.reason or report.outcome
            detail = f": {reason}" if reason else ""
            output.note(f"hermetic: {report.name} {report.url}: {report.state}{detail}")

        result = rebuild_on_nodes(
            parsed,
            targets,
            threshold=threshold,
            credentials=credentials,
            out_dir=out_dir,
            timeout_s=timeout,
            progress=progress,
            config=settings.sandbox,
        )
        output.result(Report(result.to_json(), lambda: render.rebuild_summary(result)))
        raise typer.Exit(EXIT_OK if result.agreed else EXIT_NEGATIVE)
