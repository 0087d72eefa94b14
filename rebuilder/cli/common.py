"""What every command shares: its state, the error guard, exit codes, option aliases.

Light on purpose: ``hermetic --help`` imports this and typer, nothing heavy. A command
imports what it uses inside its own function.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from rebuilder.cli.output import Failure, Output
from sandbox.trace.levels import TraceLevel

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

    from rebuilder.attest.sigstore_bundle import SigstoreTrust
    from rebuilder.cli.settings import Settings
    from sandbox.backend import SandboxBackend

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR = 0, 1, 2
_PACKAGES = ("sandbox", "rebuilder")


@dataclass
class CliState:
    """What the top-level options set, shared with the command (``ctx.obj``).

    ``euid`` and ``environ`` default to the process's; tests inject their own
    (``CliRunner().invoke(app, args, obj=CliState(euid=1000))``).
    """

    verbose: bool = False
    euid: int | None = None
    environ: dict[str, str] | None = None
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The command's settings, read from the environment once."""
        if self._settings is None:
            from rebuilder.cli.settings import Settings

            self._settings = Settings.from_env(self.environ, euid=self.euid)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def configure_logging(verbose: bool) -> None:
    import logging  # here: --help and --version log nothing

    logging.basicConfig(
        level=logging.WARNING, format="hermetic: %(levelname)s: %(message)s", stream=sys.stderr
    )
    for package in _PACKAGES:  # our debug lines, not urllib3's
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def _verbose_after_command(ctx: typer.Context, value: bool) -> bool:
    if value:
        state(ctx).verbose = True
        configure_logging(True)
    return value


@cache
def _verbose_parameter() -> Any:
    """``-v/--verbose`` as typer makes it, to add to every command; its value goes to the
    shared state, not to the command's function."""
    probe = typer.Typer(add_completion=False)

    @probe.command()
    def probe_command(
        verbose: Annotated[
            bool,
            typer.Option(
                "--verbose",
                "-v",
                is_eager=True,
                callback=_verbose_after_command,
                help="Debug logging and tracebacks (also before the command).",
            ),
        ] = False,
    ) -> None:
        """Never run: only its parameter is used."""

    (parameter,) = typer.main.get_command(probe).params
    parameter.expose_value = False
    return parameter


class _Argument(TyperArgument):
    """An argument shown by its metavar alone (``SPEC``), not with a Python type
    (``SPEC <path>``, ``ARTIFACT <list[Path]>``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class HermeticCommand(TyperCommand):
    """A command that also takes ``-v/--verbose`` after its name (``hermetic build -v``),
    and shows its arguments by what they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for parameter in self.params:
            if type(parameter) is TyperArgument:
                parameter.__class__ = _Argument
        self.params.append(_verbose_parameter())


class HermeticGroup(TyperGroup):
    """Command groups list their commands in the order they were added."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)


def _failure(error: BaseException) -> Failure:
    problems = getattr(error, "problems", ())
    return Failure(
        message=str(error),
        kind=type(error).__name__,
        problems=tuple(str(p) for p in problems),
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def guarded(ctx: typer.Context, output: Output) -> Iterator[CliState]:
    """Run a command: our errors become exit 2 with what to do (and a JSON object under
    ``--json``); SIGTERM unwinds like Ctrl-C, so containers are removed."""
    from sandbox.errors import Error  # the root of every error hermetic reports

    current = state(ctx)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield current
    except (Error, OSError) as e:  # OSError: a file the user named cannot be read
        if current.verbose:
            traceback.print_exc()
        output.error(_failure(e))
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        output.error(
            Failure(message="interrupted; the build container was removed", kind="Interrupted")
        )
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def reaping(backend: SandboxBackend, work_dir: Path, output: Output) -> Iterator[None]:
    """Remove what killed hermetic commands left behind (their build containers and
    scratch directories) on a thread while the block runs: housekeeping, kept off the
    command's own path (podman answers it beside the build). A failure is reported, not
    fatal: it is no reason to lose this command's work. An interrupted or failed block
    does not wait for it (a daemon thread that creates nothing; the next command goes on
    where it stopped)."""
    failures: list[str] = []

    def reap() -> None:
        try:
            backend.reap_orphans(work_dir)
        except Exception as e:  # whatever it was: reported below
            failures.append(str(e) or type(e).__name__)
            log.debug("reaping failed", exc_info=True)

    thread = threading.Thread(target=reap, name="hermetic-reap", daemon=True)
    thread.start()
    yield
    thread.join()
    for failure in failures:
        output.note(f"hermetic: warning: what earlier commands left was not removed: {failure}")


def ask_passphrase(reference: str) -> Any:
    """A prompt for an encrypted key, on a terminal only: never from a pipe or a file."""
    if not sys.stdin.isatty():
        return None
    return lambda: typer.prompt(f"passphrase for {reference}", hide_input=True).encode()


def load_signers(references: Sequence[str]) -> list[Signer]:
    """Loaded before any work: a wrong passphrase or a missing key costs no build time."""
    if not references:
        return []  # an unsigned build loads no signing code
    from rebuilder.attest.keys import load_signer

    return [load_signer(ref, ask_passphrase(ref)) for ref in references]


def signature_note(signers: Sequence[Signer], error: str) -> str:
    if error:
        return f"UNSIGNED ({error})"
    if not signers:
        return "unsigned: no key; run 'hermetic keygen' or pass --sign"
    return "signed by " + ", ".join(signer.public_key.keyid[:16] + "…" for signer in signers)


def sigstore_trust(settings: Settings) -> SigstoreTrust:
    """The Sigstore instance the settings name (imports sigstore: call it when needed)."""
    from rebuilder.attest.sigstore_bundle import SigstoreTrust

    return SigstoreTrust(staging=settings.sigstore.staging, offline=settings.sigstore.offline)


def size_option(text: str, option: str) -> int:
    from sandbox.units import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise typer.BadParameter(f"{option}: {e}") from None


# --- options that several commands take, with the same meaning ----------------------

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
]
SpecArgument = Annotated[
    Path,
    typer.Argument(metavar="SPEC", help="hermetic.toml, or the directory holding it."),
]
SourceOption = Annotated[
    Path | None,
    typer.Option("--source", metavar="DIR", help="Source tree (default: the spec's directory)."),
]
TraceOption = Annotated[
    TraceLevel | None,
    typer.Option(
        "--trace",
        metavar="off|standard|deep",
        case_sensitive=False,
        help="How much is traced (default: standard, or HERMETIC_TRACE); "
        "deep sees every file opened, slower.",
    ),
]
SignOption = Annotated[
    list[str] | None,
    typer.Option(
        "--sign",
        metavar="REF",
        help="Key file, signer file or sigstore: URI; repeatable "
        "(default: HERMETIC_SIGN, else the key of 'hermetic keygen').",
    ),
]
AllowRootOption = Annotated[
    bool, typer.Option("--allow-root", help="Run even as root (HERMETIC_ALLOW_ROOT=1).")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", metavar="TOKEN", help="Node API token (default: HERMETIC_NODE_TOKEN)."),
]
