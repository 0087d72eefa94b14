"""``hermetic image build`` and ``hermetic image list``: build images, see them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rebuilder.cli.build import sandbox_config
from rebuilder.cli.common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    AllowRootOption,
    JsonOption,
    guarded,
)
from rebuilder.cli.output import Output, Report


def image_build(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME|PATH",
            help="A name under images/, a recipe (directory or .toml), or a spec with [image].",
        ),
    ],
    update_lock: Annotated[
        bool, typer.Option("--update-lock", help="Accept the built image as the new lock.")
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build even when the locked image is loaded.")
    ] = False,
    json_output: JsonOption = False,
    allow_root: AllowRootOption = False,
) -> None:
    """Build an image rootless, check it against its lock, load it. Exit 0 / 1 mismatch / 2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder import render
        from sandbox.image_build import ImageBuildStatus, build_image
        from sandbox.images import ImageCatalog, definition_for
        from sandbox.podman_api import PodmanService

        config = sandbox_config(cli.settings(), allow_root)
        definition = definition_for(name, ImageCatalog(config.images_dir))
        with PodmanService(url=config.podman_url, podman_bin=config.podman_bin) as session:
            output.note(f"hermetic: building image {name} (mmdebstrap, rootless)…")
            outcome = build_image(
                definition,
                store=session,
                work_dir=config.work_dir,
                update_lock=update_lock,
                rebuild=rebuild,
            )
        document = {
            "status": outcome.status.value,
            "reference": outcome.built.reference,
            "lock": json.loads(outcome.built.to_json()),
            "package_changes": outcome.package_changes(),
            "lock_path": str(definition.lock_path),
        }
        output.result(Report(document, lambda: render.image_outcome(outcome, definition)))
        raise typer.Exit(EXIT_NEGATIVE if outcome.status is ImageBuildStatus.MISMATCH else EXIT_OK)


def image_list(
    ctx: typer.Context, json_output: JsonOption = False, allow_root: AllowRootOption = False
) -> None:
    """List the images under images/, their locked digests and whether they are loaded."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from dataclasses import replace

        from rebuilder import render
        from sandbox.images import ImageCatalog
        from sandbox.podman_api import PodmanService

        settings = cli.settings()
        config = replace(settings.sandbox, allow_root=True) if allow_root else settings.sandbox
        catalog = ImageCatalog(config.images_dir)
        definitions = [catalog.get(name) for name in catalog.names()]
        loaded: dict[str, bool] = {}
        if settings.euid != 0 or config.allow_root:  # root's podman is not asked, not refused
            with PodmanService(url=config.podman_url, podman_bin=config.podman_bin) as session:
                loaded = {
                    d.name: d.lock is not None and session.image_exists(d.lock.reference)
                    for d in definitions
                }
        document = {
            "images": [
                {
                    "name": d.name,
                    "description": d.recipe.description,
                    "locked_digest": f"sha256:{d.lock.image_digest}" if d.lock else None,
                    "stale": d.lock is not None and d.lock.recipe_digest != d.recipe.digest,
                    "reference": d.lock.reference if d.lock else None,
                    "loaded": loaded.get(d.name),
                }
                for d in definitions
            ]
        }
        output.result(Report(document, lambda: render.image_list(definitions, loaded)))
