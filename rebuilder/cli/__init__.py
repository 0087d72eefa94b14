"""The ``hermetic`` command: parse, configure, call one library function, render, exit.

One module per command group; each imports what it uses when it runs, so ``hermetic
--help`` loads typer and nothing heavy. Exit codes: 0 success, 1 a negative outcome (not
built, not reproducible, denied), 2 an error.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Annotated

import typer

from rebuilder.cli import build, check, gate, image, keys, node, project, rebuild
from rebuilder.cli.common import HermeticCommand, HermeticGroup, configure_logging, state

__all__ = ["app", "main"]


def _typer(help_text: str) -> typer.Typer:
    # plain help text (no rich): --help loads no more than it shows
    return typer.Typer(
        cls=HermeticGroup, help=help_text, no_args_is_help=True, rich_markup_mode=None
    )


app = typer.Typer(
    cls=HermeticGroup,
    help="hermetic: hermetic, traced, reproducible builds in rootless podman.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
image_app = _typer("Build images from images/ and list them.")
node_app = _typer("Run a rebuilder node, its workers, and its tokens.")
pin_app = _typer("Lockfiles become pinned [[inputs]] of a spec.")


def _version(value: bool) -> None:
    if value:  # the package's own constant: importlib.metadata would double --version's time
        from rebuilder import __version__

        typer.echo(f"hermetic {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Debug logging and tracebacks (also after a command)."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print hermetic's version."
        ),
    ] = False,
) -> None:
    current = state(ctx)
    current.verbose = current.verbose or verbose
    configure_logging(current.verbose)


def _command(group: typer.Typer, name: str, function: Callable[..., None]) -> None:
    group.command(name, cls=HermeticCommand)(function)


_command(app, "build", build.build)
_command(app, "check", check.check)
app.add_typer(image_app, name="image")
_command(image_app, "build", image.image_build)
_command(image_app, "list", image.image_list)
_command(app, "init", project.init)
app.add_typer(pin_app, name="pin")
_command(pin_app, "pip", project.pin_pip)
_command(pin_app, "npm", project.pin_npm)
_command(app, "keygen", keys.keygen)
_command(app, "verify", keys.verify)
app.add_typer(node_app, name="node")
_command(node_app, "serve", node.node_serve)
_command(node_app, "worker", node.node_worker)
_command(node_app, "token", node.node_token)
_command(app, "rebuild", rebuild.rebuild)
_command(app, "gate", gate.gate)
_command(app, "sign-policy", gate.sign_policy)
_command(app, "layout", gate.layout)


def main() -> None:
    """Console entry point."""
    try:
        app()
    finally:
        # The process is about to exit: spare the cyclic collector its last walks over
        # every object the command loaded (a tenth of a trivial build's time). What the
        # commands write is closed by their own `with` blocks and the standard streams
        # are flushed at exit; atexit handlers run and reference counting frees as usual
        # (only objects caught in reference cycles are left to the end of the process).
        gc.freeze()
