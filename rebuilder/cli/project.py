"""``hermetic init`` and ``hermetic pin``: a spec for a project, and its pinned inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rebuilder.cli.common import JsonOption, guarded
from rebuilder.cli.output import Output, Report

if TYPE_CHECKING:
    from rebuilder.pin import PinnedFile

SpecOption = Annotated[
    Path,
    typer.Option(
        "--spec", metavar="FILE|DIR", help="The spec to write the inputs into (default: here)."
    ),
]


def init(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="The project (default: here).")
    ] = Path(),
    json_output: JsonOption = False,
) -> None:
    """Guess the build system; write a commented hermetic.toml (never overwrites). Exit 0/2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output):
        from rebuilder.scaffold import init_project

        done = init_project(directory)
        guess = done.detection
        document = {
            "spec": str(done.path),
            "build_system": guess.system.value,
            "evidence": guess.evidence,
            "command": list(guess.command),
            "outputs": list(guess.outputs),
            "packages": guess.image["packages"],
            "check": list(guess.checks),
        }

        def text() -> str:
            where = directory if str(directory) != "." else Path()
            return "\n".join(
                [
                    f"wrote {done.path}",
                    f"guessed {guess.system.value} (found {guess.evidence})",
                    f"  command  {' '.join(guess.command)}",
                    f"  outputs  {', '.join(guess.outputs)}",
                    f"  image    {', '.join(guess.image['packages'])}",
                    *(f"check   {item}" for item in guess.checks),
                    f"next    hermetic image build {where} && hermetic build {where}",
                ]
            )

        output.result(Report(document, text))


def _pinned(files: list[PinnedFile], spec: Path, removed: int) -> Report:
    def text() -> str:
        lines = [f"  {f.dest}  sha256:{f.sha256[:16]}…  {f.purl or f.url}" for f in files]
        lines.append(f"pinned {len(files)} file(s) into {spec} (replaced {removed})")
        return "\n".join(lines)

    document = {
        "spec": str(spec),
        "replaced": removed,
        "files": [dataclasses.asdict(f) for f in files],
    }
    return Report(document, text)


def _spec_file(spec: Path) -> Path:
    from sandbox.spec import Spec

    path = spec / "hermetic.toml" if spec.is_dir() else spec
    Spec.from_toml(path)  # a spec that is valid before, and after
    return path


def pin_pip(
    ctx: typer.Context,
    requirements: Annotated[
        list[Path],
        typer.Argument(
            metavar="LOCKFILE", help="requirements.txt (==, --hash), pylock.toml, uv.lock."
        ),
    ],
    spec: SpecOption = Path("hermetic.toml"),
    python: Annotated[
        str | None,
        typer.Option(
            "--python", metavar="X.Y", help="The build's Python (default: from the image's lock)."
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform", metavar="TAG", help="The wheel platform (default: from the image's lock)."
        ),
    ] = None,
    no_binary: Annotated[
        list[str] | None,
        typer.Option(
            "--no-binary",
            metavar="NAME",
            help="Take this project's sdist (:all: every); repeatable.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Resolve pinned requirements to files on the index; write them as inputs. Exit 0/2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from packaging.utils import canonicalize_name

        from rebuilder.pin import (
            WHEELS_DIR,
            PackageIndex,
            PipPinner,
            build_target,
            pip_index_url,
            read_python_lock,
            write_inputs,
        )
        from sandbox.images import ImageCatalog
        from sandbox.spec import Spec
        from sandbox.store import ContentStore

        spec_path = _spec_file(spec)
        settings = cli.settings()
        images = ImageCatalog(settings.sandbox.images_dir)
        python, platform = build_target(
            Spec.from_toml(spec_path), images, python=python, platform=platform
        )
        wanted = [
            w for path in requirements for w in read_python_lock(path, python, platform=platform)
        ]
        pinner = PipPinner(
            index=PackageIndex(pip_index_url()),
            store=ContentStore(settings.sandbox.store_dir),
            python=python,
            platform=platform,
            no_binary=frozenset(canonicalize_name(n) for n in no_binary or []),
        )
        files = pinner.pin(wanted)
        removed, _ = write_inputs(spec_path, files, WHEELS_DIR)
        Spec.from_toml(spec_path)
        output.result(_pinned(files, spec_path, removed))


def pin_npm(
    ctx: typer.Context,
    lockfile: Annotated[
        Path, typer.Argument(metavar="LOCKFILE", help="package-lock.json (v2 or v3).")
    ],
    spec: SpecOption = Path("hermetic.toml"),
    json_output: JsonOption = False,
) -> None:
    """Every tarball of an npm lockfile, checked and written as inputs. Exit 0/2."""
    output = Output.chosen(json_output)
    with guarded(ctx, output) as cli:
        from rebuilder.pin import (
            NPM_DIR,
            npm_registry,
            pin_npm_packages,
            read_npm_lock,
            write_inputs,
        )
        from sandbox.spec import Spec
        from sandbox.store import ContentStore

        spec_path = _spec_file(spec)
        registry, token = npm_registry(lockfile.resolve().parent)
        files = pin_npm_packages(
            read_npm_lock(lockfile),
            ContentStore(cli.settings().sandbox.store_dir),
            token=token,
            registry=registry,
        )
        removed, _ = write_inputs(spec_path, files, NPM_DIR)
        Spec.from_toml(spec_path)
        output.result(_pinned(files, spec_path, removed))
