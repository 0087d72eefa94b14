"""The ``hermetic`` command: parse, configure, call one library function, render, exit.

Exit codes: 0 success, 1 a negative outcome (not built, lock mismatch), 2 an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from packaging.utils import canonicalize_name
from securesystemslib.signer import Signer

from rebuilder import render
from rebuilder.against import Published, compare_published
from rebuilder.attest.attestor import BuildAttestor, signed_envelope
from rebuilder.attest.check_statement import CHECK_ATTESTATION_FILE, check_statement
from rebuilder.attest.envelope import write_envelope
from rebuilder.attest.keys import (
    KeyProblem,
    KeyRing,
    Passphrase,
    default_key_path,
    generate_keypair,
    load_public_key,
    load_signer,
    signing_references,
)
from rebuilder.attest.provenance import PROVENANCE_FILE, default_builder_id
from rebuilder.attest.verify import verify_attestation
from rebuilder.check import CheckRequest, prepare_report_dir, run_check
from rebuilder.gate.gate import GateError, decisions_json, run_gate, write_vsa
from rebuilder.gate.layout import write_layout
from rebuilder.gate.policy import PolicyError, load_policy
from rebuilder.gate.policy_signature import load_signed_policy, sign_policy
from rebuilder.node.api import ApiSettings
from rebuilder.node.auth import ClientScopes, TokenRegistry, add_token
from rebuilder.node.client import Credentials
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.remote import CeleryDispatch, WorkerSettings, celery_app, run_worker
from rebuilder.node.requests import RequestLimits
from rebuilder.node.serve import Listen, serve
from rebuilder.pin import (
    NPM_DIR,
    WHEELS_DIR,
    PackageIndex,
    PinnedFile,
    PipPinner,
    build_target,
    npm_registry,
    pin_npm_packages,
    pip_index_url,
    read_npm_lock,
    read_python_lock,
    write_inputs,
)
from rebuilder.progress import LiveCheckProgress, LiveProgress, PlainCheckProgress, PlainProgress
from rebuilder.rebuild import NodeReport, NodeTarget, RebuildError, rebuild
from rebuilder.sbom import SbomFormat, SbomWriter, image_contents
from rebuilder.scaffold import init_project
from rebuilder.variations import parse_vary
from sandbox import connect_backend
from sandbox.build import (
    ARTIFACTS_DIR,
    BuildRequest,
    default_out_dir,
    new_build_id,
    refuse_root,
    run_build,
)
from sandbox.config import SandboxConfig
from sandbox.errors import Error
from sandbox.image_build import ImageBuildStatus, build_image, prepare_image
from sandbox.images import ImageCatalog, definition_for
from sandbox.input_policy import InputPolicy, host_addresses
from sandbox.podman_api import PodmanService
from sandbox.result import BuildResult
from sandbox.spec import Limits, Spec
from sandbox.store import ContentStore
from sandbox.trace.levels import TraceLevel
from sandbox.units import parse_duration, parse_size
from sandbox.uris import NODE_BUILDER

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    help="hermetic: hermetic, traced, reproducible builds in rootless podman.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
image_app = typer.Typer(help="Build images from images/ and list them.", no_args_is_help=True)
app.add_typer(image_app, name="image")
node_app = typer.Typer(help="Run a rebuilder node and manage its tokens.", no_args_is_help=True)
app.add_typer(node_app, name="node")
pin_app = typer.Typer(help="Lockfiles become pinned [[inputs]] of a spec.", no_args_is_help=True)
app.add_typer(pin_app, name="pin")


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging and tracebacks.")
    ] = False,
) -> None:
    ctx.obj = verbose
    logging.basicConfig(
        level=logging.WARNING, format="hermetic: %(levelname)s: %(message)s", stream=sys.stderr
    )
    for package in ("sandbox", "rebuilder"):  # our debug lines, not urllib3's
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _guarded(ctx: typer.Context) -> Iterator[None]:
    """Turn our errors into exit 2 with diagnostics; SIGTERM unwinds like Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    except Error as e:
        if ctx.obj:
            traceback.print_exc()
        typer.echo(f"hermetic: error: {e!s}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as e:  # a file the user named cannot be read or written
        if ctx.obj:
            traceback.print_exc()
        typer.echo(f"hermetic: error: {e}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        typer.echo("hermetic: interrupted; the build container was removed", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _config(allow_root: bool) -> SandboxConfig:
    config = SandboxConfig.from_env()
    return replace(config, allow_root=True) if allow_root else config


def _progress() -> LiveProgress | PlainProgress:
    if sys.stderr.isatty():
        return LiveProgress()
    return PlainProgress()


def _podman(config: SandboxConfig) -> PodmanService:
    return PodmanService(url=config.podman_url, podman_bin=config.podman_bin)


AllowRoot = Annotated[
    bool, typer.Option("--allow-root", help="Run even as root (HERMETIC_ALLOW_ROOT=1).")
]
Sign = Annotated[
    list[str] | None,
    typer.Option(
        "--sign",
        help="Key file, signer file or sigstore: URI; repeatable "
        "(default: HERMETIC_SIGN, else the key of 'hermetic keygen').",
    ),
]


def _ask_passphrase(reference: str) -> Passphrase | None:
    """A prompt for an encrypted key, on a terminal only: never from a pipe or a file."""
    if not sys.stdin.isatty():
        return None
    return lambda: typer.prompt(f"passphrase for {reference}", hide_input=True).encode()


def _signers(sign: list[str] | None) -> list[Signer]:
    """Loaded before the build: a wrong passphrase or a missing key costs no build time."""
    return [load_signer(ref, _ask_passphrase(ref)) for ref in signing_references(sign or [])]


def _signature_note(signers: list[Signer], error: str) -> str:
    if error:
        return f"UNSIGNED ({error})"
    if not signers:
        return "unsigned: no key; run 'hermetic keygen' or pass --sign"
    return "signed by " + ", ".join(signer.public_key.keyid[:16] + "…" for signer in signers)


@app.command()
def build(
    ctx: typer.Context,
    spec: Annotated[
        Path, typer.Argument(help="hermetic.toml, or the directory holding it.")
    ] = Path(),
    out: Annotated[Path | None, typer.Option("--out", help="Directory for the results.")] = None,
    source: Annotated[
        Path | None, typer.Option("--source", help="Source tree (default: the spec's directory).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print result.json on stdout.")
    ] = False,
    trace: Annotated[
        TraceLevel | None,
        typer.Option(
            "--trace",
            help="off, standard (default; HERMETIC_TRACE) or deep (every file opened, slower).",
            case_sensitive=False,
        ),
    ] = None,
    sign: Sign = None,
    update_lock: Annotated[
        bool,
        typer.Option("--update-lock", help="Write a missing or stale image lock of a recipe."),
    ] = False,
    sbom_format: Annotated[
        SbomFormat,
        typer.Option("--sbom-format", help="spdx (sbom.spdx.json) or cyclonedx (sbom.cdx.json)."),
    ] = SbomFormat.SPDX,
    allow_root: AllowRoot = False,
) -> None:
    """Run one hermetic build. Exit 0 built, 1 not built, 2 error (also: signing failed)."""
    with _guarded(ctx):
        config = _config(allow_root)
        parsed = Spec.from_toml(spec, source_dir=source.resolve() if source else None)
        refuse_root(config)
        signers = _signers(sign)
        attestor = BuildAttestor(
            signers=signers,
            builder_id=default_builder_id(),
            spec_document=parsed.document,
            spec_sha256=parsed.sha256,
            source_dir=parsed.source_dir,
        )
        sbom = SbomWriter(
            image=lambda result: image_contents(parsed, result.image, config),
            sbom_format=sbom_format,
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
        with connect_backend(config) as backend, _progress() as progress:
            backend.reap_orphans(config.work_dir)  # what a killed hermetic left behind
            result = run_build(
                request, config=config, backend=backend, observer=progress, build_id=build_id
            )
        if json_output:
            typer.echo(json.dumps(result.to_json(), indent=2))
        else:
            typer.echo(render.build_summary(result, log_tail=render.log_tail(result.log.path)))
            if attestor.written:
                note = _signature_note(signers, attestor.error)
                typer.echo(f"attest  {out_dir / PROVENANCE_FILE} ({note})")
            for name in sbom.written:
                typer.echo(f"sbom    {out_dir / name}")
        error = attestor.error or sbom.error
        if error:
            typer.echo(f"hermetic: error: {error}; results kept in {out_dir}", err=True)
            raise typer.Exit(EXIT_ERROR)
        raise typer.Exit(EXIT_OK if result.built else EXIT_NEGATIVE)


@app.command()
def check(
    ctx: typer.Context,
    spec: Annotated[
        Path, typer.Argument(help="hermetic.toml, or the directory holding it.")
    ] = Path(),
    builds: Annotated[
        int, typer.Option("--builds", min=2, help="Builds: one control, the rest experiments.")
    ] = 2,
    vary: Annotated[
        str | None,
        typer.Option(
            "--vary", help="-name removes one, +name adds one, a,b sets them (default: all)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Repeat a check's random choices.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", min=1, help="Builds at once (default: 2, or 1 CPU: 1)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Directory for builds and reports.")
    ] = None,
    source: Annotated[
        Path | None, typer.Option("--source", help="Source tree (default: the spec's directory).")
    ] = None,
    trace: Annotated[
        TraceLevel | None,
        typer.Option(
            "--trace", help="Tracing of every build (hints need it).", case_sensitive=False
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print check.json on stdout.")
    ] = False,
    against: Annotated[
        list[str] | None,
        typer.Option(
            "--against",
            help="URL#sha256=… of a published artifact to compare with the output of its "
            "name; repeatable.",
        ),
    ] = None,
    sign: Sign = None,
    allow_root: AllowRoot = False,
) -> None:
    """Build under variations and find what breaks reproducibility. Exit 0 / 1 / 2."""
    with _guarded(ctx):
        config = _config(allow_root)
        parsed = Spec.from_toml(spec, source_dir=source.resolve() if source else None)
        published = [Published.parse(text) for text in against or []]
        refuse_root(config)
        signers = _signers(sign)
        variations = parse_vary(vary)
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
        with connect_backend(config) as backend, _check_progress() as progress:
            backend.reap_orphans(config.work_dir)  # what a killed hermetic left behind
            store = backend.image_store()
            if store is not None:  # build (by its lock) or pull the image first, once
                prepare_image(parsed, config=config, store=store)
            result = run_check(request, config=config, backend=backend, observer=progress)
        payload = check_statement(result, builder_id=default_builder_id(), now=datetime.now(tz=UTC))
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
        if json_output:
            document = result.to_json()
            if published:
                document["against"] = [c.to_json() for c in comparisons]
            typer.echo(json.dumps(document, indent=2))
        else:
            typer.echo(render.check_summary(result))
            note = _signature_note(signers, error)
            typer.echo(f"attest  {report_dir / CHECK_ATTESTATION_FILE} ({note})")
            for c in comparisons:
                said = "MATCHES" if c.matches else "DIFFERS from"
                diff = c.report.text if c.report and c.report.text else None
                typer.echo(
                    f"against {c.output} {said} {c.published.url}" + (f" ({diff})" if diff else "")
                )
        if error:
            typer.echo(f"hermetic: error: {error}; results kept in {report_dir}", err=True)
            raise typer.Exit(EXIT_ERROR)
        same = all(c.matches for c in comparisons) and len(comparisons) == len(published)
        raise typer.Exit(EXIT_OK if result.reproducible and same else EXIT_NEGATIVE)


@app.command("init")
def init_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="The project (default: here).")] = Path(),
    json_output: Annotated[bool, typer.Option("--json", help="Print what was guessed.")] = False,
) -> None:
    """Guess the build system; write a commented hermetic.toml (never overwrites). Exit 0/2."""
    with _guarded(ctx):
        done = init_project(directory)
        guess = done.detection
        if json_output:
            typer.echo(
                json.dumps(
                    {
                        "spec": str(done.path),
                        "build_system": guess.system.value,
                        "evidence": guess.evidence,
                        "command": list(guess.command),
                        "outputs": list(guess.outputs),
                        "packages": guess.image["packages"],
                        "check": list(guess.checks),
                    },
                    indent=2,
                )
            )
            return
        typer.echo(f"wrote {done.path}")
        typer.echo(f"guessed {guess.system.value} (found {guess.evidence})")
        typer.echo(f"  command  {' '.join(guess.command)}")
        typer.echo(f"  outputs  {', '.join(guess.outputs)}")
        typer.echo(f"  image    {', '.join(guess.image['packages'])}")
        for item in guess.checks:
            typer.echo(f"check   {item}")
        where = directory if str(directory) != "." else Path()
        typer.echo(f"next    hermetic image build {where} && hermetic build {where}")


SpecOption = Annotated[Path, typer.Option("--spec", help="The spec to write the inputs into.")]


def _pin_summary(files: list[PinnedFile], spec: Path, removed: int) -> str:
    lines = [f"  {f.dest}  sha256:{f.sha256[:16]}…  {f.purl or f.url}" for f in files]
    lines.append(f"pinned {len(files)} file(s) into {spec} (replaced {removed})")
    return "\n".join(lines)


@pin_app.command("pip")
def pin_pip(
    ctx: typer.Context,
    requirements: Annotated[
        list[Path], typer.Argument(help="requirements.txt (==, --hash), pylock.toml, uv.lock.")
    ],
    spec: SpecOption = Path("hermetic.toml"),
    python: Annotated[
        str | None,
        typer.Option("--python", help="The build's Python (default: from the image's lock)."),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="The wheel platform (default: from the image's lock)."),
    ] = None,
    no_binary: Annotated[
        list[str] | None,
        typer.Option("--no-binary", help="Take this project's sdist; repeatable."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the pinned files.")] = False,
) -> None:
    """Resolve pinned requirements to files on the index; write them as inputs. Exit 0/2."""
    with _guarded(ctx):
        spec_path = spec / "hermetic.toml" if spec.is_dir() else spec
        parsed = Spec.from_toml(spec_path)  # a spec that is valid before, and after
        images = ImageCatalog(SandboxConfig.from_env().images_dir)
        python, platform = build_target(parsed, images, python=python, platform=platform)
        wanted = [
            w for path in requirements for w in read_python_lock(path, python, platform=platform)
        ]
        pinner = PipPinner(
            index=PackageIndex(pip_index_url()),
            store=ContentStore(SandboxConfig.from_env().store_dir),
            python=python,
            platform=platform,
            no_binary=frozenset(canonicalize_name(n) for n in no_binary or []),
        )
        files = pinner.pin(wanted)
        removed, _ = write_inputs(spec_path, files, WHEELS_DIR)
        Spec.from_toml(spec_path)
        if json_output:
            typer.echo(json.dumps([dataclasses.asdict(f) for f in files], indent=2))
        else:
            typer.echo(_pin_summary(files, spec_path, removed))


@pin_app.command("npm")
def pin_npm(
    ctx: typer.Context,
    lockfile: Annotated[Path, typer.Argument(help="package-lock.json (v2 or v3).")],
    spec: SpecOption = Path("hermetic.toml"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the pinned files.")] = False,
) -> None:
    """Every tarball of an npm lockfile, checked and written as inputs. Exit 0/2."""
    with _guarded(ctx):
        spec_path = spec / "hermetic.toml" if spec.is_dir() else spec
        Spec.from_toml(spec_path)
        registry, token = npm_registry(lockfile.resolve().parent)
        files = pin_npm_packages(
            read_npm_lock(lockfile),
            ContentStore(SandboxConfig.from_env().store_dir),
            token=token,
            registry=registry,
        )
        removed, _ = write_inputs(spec_path, files, NPM_DIR)
        Spec.from_toml(spec_path)
        if json_output:
            typer.echo(json.dumps([dataclasses.asdict(f) for f in files], indent=2))
        else:
            typer.echo(_pin_summary(files, spec_path, removed))


@app.command()
def keygen(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Private key path; the public key goes to PATH.pub."),
    ] = None,
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Encrypt the private key (asked twice).")
    ] = False,
) -> None:
    """Make an ed25519 signing key pair (private key mode 0600). Exit 0 / 2."""
    with _guarded(ctx):
        path = (out or default_key_path()).resolve()
        secret = None
        if passphrase:
            if not sys.stdin.isatty():
                raise KeyProblem("--passphrase needs a terminal to ask on")
            secret = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True).encode()
        keyid = generate_keypair(path, secret)
        typer.echo(f"private key  {path} (0600{', encrypted' if secret else ''})")
        typer.echo(f"public key   {path}.pub")
        typer.echo(f"key id       {keyid}")


@app.command()
def verify(
    ctx: typer.Context,
    attestation: Annotated[Path, typer.Argument(help="A DSSE envelope (*.intoto.json).")],
    key: Annotated[
        list[Path],
        typer.Option("--key", help="Public key (PEM or securesystemslib JSON); repeatable."),
    ],
    artifact: Annotated[
        list[Path] | None,
        typer.Option("--artifact", help="A file whose sha256 must be a subject; repeatable."),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", min=1, help="Distinct keys that must sign (default: all)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Check an attestation's signatures, types and subjects. Exit 0 / 1 / 2."""
    with _guarded(ctx):
        keys = [load_public_key(path) for path in key]
        distinct = len(KeyRing.of(keys))  # by key material: two spellings are one key
        if threshold is not None and threshold > distinct:
            raise KeyProblem(
                f"--threshold {threshold} is more than the {distinct} distinct key(s) given "
                f"(expected 1 to {distinct})"
            )
        for path in artifact or []:
            if not path.is_file():
                raise KeyProblem(f"{path}: no such artifact file")
        outcome = verify_attestation(
            attestation, keys, threshold=threshold, artifacts=artifact or []
        )
        if json_output:
            typer.echo(json.dumps(outcome.to_json(), indent=2))
        else:
            typer.echo(render.verification(outcome))
        raise typer.Exit(EXIT_OK if outcome.ok else EXIT_NEGATIVE)


# What a node accepts of a stranger's request: options of both `node serve` and
# `node worker` (a worker takes its rules from its own options, never from a task).
AllowInputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-input",
        help="URL prefix inputs may be fetched from; repeatable (default: https://).",
    ),
]
AllowInputNetworkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-input-network",
        help="A non-public network inputs may come from (CIDR, e.g. a mirror); repeatable.",
    ),
]
MaxInputOption = Annotated[
    str, typer.Option("--max-input", help="Largest input; a fetch stops there.")
]
InputDeadlineOption = Annotated[
    float,
    typer.Option("--input-deadline", min=1, help="Seconds for all of one job's input fetches."),
]
MaxUnpackedOption = Annotated[
    str, typer.Option("--max-unpacked", help="Largest request once unpacked.")
]
MaxMembersOption = Annotated[
    int, typer.Option("--max-members", min=1, help="Most files in one request.")
]
MaxTimeoutOption = Annotated[
    str, typer.Option("--max-timeout", help="Largest limits.timeout a spec may ask for.")
]
MaxMemoryOption = Annotated[
    str, typer.Option("--max-memory", help="Largest limits.memory a spec may ask for.")
]
MaxPidsOption = Annotated[
    int, typer.Option("--max-pids", min=1, help="Largest limits.pids a spec may ask for.")
]
MaxDiskOption = Annotated[
    str, typer.Option("--max-disk", help="Largest limits.disk a spec may ask for.")
]
MaxLogOption = Annotated[
    str, typer.Option("--max-log", help="Largest limits.log a spec may ask for.")
]
MaxInputsOption = Annotated[
    int, typer.Option("--max-inputs", min=0, help="Most [[inputs]] in one spec.")
]
MaxOutputOption = Annotated[
    str, typer.Option("--max-output", help="Largest outputs of one build, together.")
]


def _request_rules(
    *,
    allow_input: list[str] | None,
    allow_input_network: list[str] | None,
    max_input: str,
    input_deadline: float,
    max_unpacked: str,
    max_members: int,
    max_timeout: str,
    max_memory: str,
    max_pids: int,
    max_disk: str,
    max_log: str,
    max_inputs: int,
    max_output: str,
) -> tuple[InputPolicy, RequestLimits]:
    """A node's (or worker's) input policy and request limits from its options."""
    try:
        input_policy = InputPolicy.of(
            allow=allow_input or [],
            networks=allow_input_network or [],
            max_bytes=_size_option(max_input, "--max-input"),
            deadline_s=input_deadline,
            own=host_addresses(),  # the node's own addresses are as internal as loopback
        )
    except ValueError as e:
        raise typer.BadParameter(f"--allow-input / --allow-input-network: {e}") from None
    try:
        timeout_s = parse_duration(max_timeout)
    except ValueError as e:
        raise typer.BadParameter(f"--max-timeout: {e}") from None
    limits = RequestLimits(
        max_members=max_members,
        max_unpacked_bytes=_size_option(max_unpacked, "--max-unpacked"),
        ceilings=Limits(
            timeout_s=timeout_s,
            memory_bytes=_size_option(max_memory, "--max-memory"),
            pids=max_pids,
            disk_bytes=_size_option(max_disk, "--max-disk"),
            log_bytes=_size_option(max_log, "--max-log"),
        ),
        max_inputs=max_inputs,
        max_output_bytes=_size_option(max_output, "--max-output"),
    )
    return input_policy, limits


@node_app.command("serve")
def node_serve(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="The node's own directory: queue, store, results.")
    ],
    key: Annotated[str, typer.Option("--key", help="The node's signing key (as --sign).")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT.")] = "127.0.0.1:8470",
    tokens: Annotated[
        Path | None, typer.Option("--tokens", help="Tokens file ('hermetic node token').")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Server certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Server key.")] = None,
    client_ca: Annotated[
        Path | None, typer.Option("--client-ca", help="Mutual TLS: CA of client certificates.")
    ] = None,
    builder_id: Annotated[
        str | None, typer.Option("--builder-id", help="Identity in provenance.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Builds at once.")] = 1,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="HERMETIC_BROKER",
            help="redis://:PASSWORD@… or rediss://… : builds go to 'hermetic node worker's.",
        ),
    ] = None,
    lease: Annotated[
        float,
        typer.Option("--lease", min=1, help="Seconds before a silent worker's job is reclaimed."),
    ] = 60.0,
    deadline: Annotated[float, typer.Option("--deadline", min=1, help="Seconds per job.")] = 3600.0,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1)] = 3,
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=1, help="Queued + running.")] = 16,
    max_request: Annotated[str, typer.Option("--max-request", help="Largest request.")] = "64MiB",
    max_unpacked: MaxUnpackedOption = "1GiB",
    max_members: MaxMembersOption = 100_000,
    allow_input: AllowInputOption = None,
    allow_input_network: AllowInputNetworkOption = None,
    max_input: MaxInputOption = "2GiB",
    input_deadline: InputDeadlineOption = 900.0,
    max_timeout: MaxTimeoutOption = "1h",
    max_memory: MaxMemoryOption = "8GiB",
    max_pids: MaxPidsOption = 16384,
    max_disk: MaxDiskOption = "20GiB",
    max_log: MaxLogOption = "256MiB",
    max_inputs: MaxInputsOption = 64,
    max_output: MaxOutputOption = "4GiB",
    min_free_disk: Annotated[
        str, typer.Option("--min-free-disk", help="No request or build below this free space.")
    ] = "2GiB",
    max_client_jobs: Annotated[
        int, typer.Option("--max-client-jobs", min=1, help="Queued + running of one client.")
    ] = 4,
    client_quota: Annotated[
        str, typer.Option("--client-quota", help="What one client's jobs may keep on disk.")
    ] = "20GiB",
    retention_days: Annotated[
        float,
        typer.Option("--retention-days", min=0.001, help="Days a finished job's results stay."),
    ] = 7.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="Open HTTP connections at most.")
    ] = 256,
    client_scopes: Annotated[
        Path | None,
        typer.Option("--client-scopes", help="Mutual TLS: certificate subjects -> scopes."),
    ] = None,
    rate: Annotated[
        int, typer.Option("--rate", min=1, help="Requests per minute per client.")
    ] = 600,
    allow_root: AllowRoot = False,
) -> None:
    """Serve rebuilds over HTTP with this node's key. Runs until interrupted."""
    with _guarded(ctx):
        config = _config(allow_root)
        refuse_root(config)
        tls = [tls_cert, tls_key, client_ca]
        if any(tls) and not (tls_cert and tls_key):
            raise KeyProblem("TLS needs both --tls-cert and --tls-key (and --client-ca for mTLS)")
        if tokens is None and not (all(tls) and client_scopes):
            raise KeyProblem(
                "a node needs authentication: --tokens FILE, or mutual TLS "
                "(--tls-cert, --tls-key, --client-ca and --client-scopes FILE)"
            )
        if client_scopes and not client_ca:
            raise KeyProblem("--client-scopes needs mutual TLS: --client-ca CA.pem")
        input_policy, request_limits = _request_rules(
            allow_input=allow_input,
            allow_input_network=allow_input_network,
            max_input=max_input,
            input_deadline=input_deadline,
            max_unpacked=max_unpacked,
            max_members=max_members,
            max_timeout=max_timeout,
            max_memory=max_memory,
            max_pids=max_pids,
            max_disk=max_disk,
            max_log=max_log,
            max_inputs=max_inputs,
            max_output=max_output,
        )
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise KeyProblem(f"--listen {listen!r}: expected HOST:PORT, such as 127.0.0.1:8470")
        settings = NodeSettings(
            directory=directory.resolve(),
            builder_id=builder_id
            or os.environ.get("HERMETIC_BUILDER_ID")
            or f"{NODE_BUILDER}#{host}:{port}",
            workers=workers,
            lease_s=lease,
            deadline_s=deadline,
            max_attempts=max_attempts,
            max_active_jobs=max_jobs,
            trace=config.trace,
            input_policy=input_policy,
            request_limits=request_limits,
            min_free_bytes=_size_option(min_free_disk, "--min-free-disk"),
            max_client_jobs=max_client_jobs,
            client_quota_bytes=_size_option(client_quota, "--client-quota"),
            retention_s=retention_days * 86400,
        )
        node = Node(settings, load_signer(key, _ask_passphrase(key)), config=config)
        if broker:
            # redelivery of an unacknowledged build only after its deadline (and a margin)
            app_ = celery_app(broker, visibility_timeout_s=deadline + 600)
            node.dispatch = CeleryDispatch(
                app_,
                builder_id=settings.builder_id,
                trace=settings.trace,
                config=node.config,
                limits=settings.request_limits,
            )
        api = ApiSettings(
            tokens=TokenRegistry.load(tokens) if tokens else None,
            client_scopes=ClientScopes.load(client_scopes) if client_scopes else None,
            max_request_bytes=_size_option(max_request, "--max-request"),
            requests_per_minute=rate,
            max_connections=max_connections,
        )
        keyid = node.signer.public_key.keyid
        typer.echo(f"hermetic node {settings.builder_id} on {listen} (key {keyid[:16]}…)", err=True)
        serve(
            node,
            api,
            Listen(
                host=host, port=int(port), tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca
            ),
        )


@node_app.command("worker")
def node_worker(
    ctx: typer.Context,
    broker: Annotated[
        str,
        typer.Option(
            "--broker", envvar="HERMETIC_BROKER", help="The node's redis://:PASSWORD@… broker."
        ),
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="This worker's own directory (store, scratch).")
    ],
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 1,
    max_unpacked: MaxUnpackedOption = "1GiB",
    max_members: MaxMembersOption = 100_000,
    allow_input: AllowInputOption = None,
    allow_input_network: AllowInputNetworkOption = None,
    max_input: MaxInputOption = "2GiB",
    input_deadline: InputDeadlineOption = 900.0,
    max_timeout: MaxTimeoutOption = "1h",
    max_memory: MaxMemoryOption = "8GiB",
    max_pids: MaxPidsOption = 16384,
    max_disk: MaxDiskOption = "20GiB",
    max_log: MaxLogOption = "256MiB",
    max_inputs: MaxInputsOption = 64,
    max_output: MaxOutputOption = "4GiB",
    deadline: Annotated[
        float, typer.Option("--deadline", min=1, help="Seconds a task may take at most.")
    ] = 3600.0,
    allow_root: AllowRoot = False,
) -> None:
    """Build for a node over its Celery broker (scale-out). Runs until interrupted.

    The rules are this worker's own (give it the node's): a task cannot change them."""
    with _guarded(ctx):
        refuse_root(_config(allow_root))
        input_policy, request_limits = _request_rules(
            allow_input=allow_input,
            allow_input_network=allow_input_network,
            max_input=max_input,
            input_deadline=input_deadline,
            max_unpacked=max_unpacked,
            max_members=max_members,
            max_timeout=max_timeout,
            max_memory=max_memory,
            max_pids=max_pids,
            max_disk=max_disk,
            max_log=max_log,
            max_inputs=max_inputs,
            max_output=max_output,
        )
        settings = WorkerSettings(
            directory=directory,
            input_policy=input_policy,
            limits=request_limits,
            max_deadline_s=deadline,
        )
        run_worker(broker, settings, concurrency=concurrency)


@node_app.command("token")
def node_token(
    ctx: typer.Context,
    tokens: Annotated[Path, typer.Option("--tokens", help="The node's tokens file.")],
    name: Annotated[str, typer.Option("--name", help="Who the token is for.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="submit, read (own jobs), read-all or cosign; repeatable."),
    ],
) -> None:
    """Add a scoped API token to a tokens file; prints the token once."""
    with _guarded(ctx):
        typer.echo(add_token(tokens, name, scope))


@app.command("rebuild")
def rebuild_command(
    ctx: typer.Context,
    spec: Annotated[
        Path, typer.Argument(help="hermetic.toml, or the directory holding it.")
    ] = Path(),
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="URL, or URL=PUBKEY to pin its key; repeatable."),
    ] = None,
    threshold: Annotated[
        int, typer.Option("--threshold", min=1, help="Nodes that must agree.")
    ] = 2,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for the results.")] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="API token (default: HERMETIC_NODE_TOKEN).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Client certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Client key.")] = None,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", help="CA of the nodes.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 3600.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print rebuild.json.")] = False,
) -> None:
    """Rebuild on independent nodes; K agreeing nodes co-sign one statement. Exit 0 / 1 / 2."""
    with _guarded(ctx):
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
            token=token or os.environ.get("HERMETIC_NODE_TOKEN") or None,
            client_cert=tls_cert,
            client_key=tls_key,
            ca=tls_ca,
        )
        out_dir = (out or Path.cwd() / "hermetic-rebuild" / new_build_id()).resolve()
        result = rebuild(
            parsed,
            targets,
            threshold=threshold,
            credentials=credentials,
            out_dir=out_dir,
            timeout_s=timeout,
            progress=_rebuild_progress,
        )
        if json_output:
            typer.echo(json.dumps(result.to_json(), indent=2))
        else:
            typer.echo(render.rebuild_summary(result))
        raise typer.Exit(EXIT_OK if result.agreed else EXIT_NEGATIVE)


def _size_option(text: str, option: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise typer.BadParameter(f"{option}: {e}") from None


def _rebuild_progress(report: NodeReport) -> None:
    detail = f": {report.reason or report.outcome}" if report.reason or report.outcome else ""
    typer.echo(f"hermetic: {report.name} {report.url}: {report.state}{detail}", err=True)


@app.command("gate")
def gate_command(
    ctx: typer.Context,
    artifacts: Annotated[list[Path], typer.Argument(help="The files to admit or deny.")],
    policy: Annotated[Path, typer.Option("--policy", help="The gate's policy (TOML).")],
    attestations: Annotated[
        list[str] | None,
        typer.Option(
            "--attestations",
            help="A directory, or a node URL; repeatable (default: the policy's nodes).",
        ),
    ] = None,
    policy_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy-key",
            help="A policy owner's public key; repeatable. The policy must carry their "
            "signatures (POLICY.intoto.json).",
        ),
    ] = None,
    policy_threshold: Annotated[
        int | None,
        typer.Option(
            "--policy-threshold", min=1, help="Owners who must have signed (default: all)."
        ),
    ] = None,
    policy_signature: Annotated[
        Path | None,
        typer.Option("--policy-signature", help="The policy's signatures (default: beside it)."),
    ] = None,
    policy_min_version: Annotated[
        int | None,
        typer.Option(
            "--policy-min-version",
            min=1,
            help="Refuse a signed policy whose version is lower (an older one put back).",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the decisions.")] = False,
    vsa_key: Annotated[
        str | None, typer.Option("--vsa-key", help="Sign a SLSA VSA per admitted artifact.")
    ] = None,
    vsa_dir: Annotated[Path, typer.Option("--vsa-dir", help="Where the VSAs go.")] = Path(
        "hermetic-vsa"
    ),
    token: Annotated[
        str | None, typer.Option("--token", help="Node API token (HERMETIC_NODE_TOKEN).")
    ] = None,
) -> None:
    """Admit artifacts only on matching digests from enough trusted operators. Exit 0/1/2."""
    with _guarded(ctx):
        now = datetime.now(tz=UTC)
        if policy_key:
            owners = [load_public_key(path) for path in policy_key]
            loaded = load_signed_policy(
                policy,
                owners,
                threshold=policy_threshold,
                signature=policy_signature,
                now=now,
                min_version=policy_min_version,
            )
        elif any(o is not None for o in (policy_threshold, policy_signature, policy_min_version)):
            raise PolicyError(
                "--policy-threshold, --policy-signature and --policy-min-version need --policy-key"
            )
        else:
            loaded = load_policy(policy, now=now)
        signer = load_signer(vsa_key, _ask_passphrase(vsa_key)) if vsa_key else None
        credentials = Credentials(token=token or os.environ.get("HERMETIC_NODE_TOKEN") or None)
        sources = attestations or [url for op in loaded.operators for url in op.nodes]
        if not sources:
            raise GateError(
                "no attestations to read: pass --attestations DIR|URL, or list the operators' "
                "nodes in the policy"
            )
        decisions, read = run_gate(artifacts, loaded, sources, credentials=credentials, now=now)
        vsas: dict[str, Path] = {}
        if signer is not None:
            for decision in decisions:
                if decision.admitted:
                    vsas[decision.artifact] = write_vsa(
                        decision,
                        loaded,
                        read,
                        signer=signer,
                        verifier_id=default_builder_id(),
                        directory=vsa_dir,
                        now=now,
                    )
        if json_output:
            typer.echo(decisions_json(decisions, vsas))
        else:
            typer.echo(render.gate_decisions(decisions, vsas))
        admitted = all(decision.admitted for decision in decisions)
        raise typer.Exit(EXIT_OK if admitted else EXIT_NEGATIVE)


@app.command("sign-policy")
def sign_policy_command(
    ctx: typer.Context,
    policy: Annotated[Path, typer.Argument(help="The gate's policy (TOML).")],
    key: Annotated[
        list[str], typer.Option("--key", help="A policy owner's signing key; repeatable.")
    ],
) -> None:
    """Sign a gate policy as one of its owners (signatures go to POLICY.intoto.json). 0 / 2."""
    with _guarded(ctx):
        signers = [load_signer(ref, _ask_passphrase(ref)) for ref in key]
        written = sign_policy(policy, signers, now=datetime.now(tz=UTC))
        typer.echo(f"signed  {written}")


@app.command("layout")
def layout_command(
    ctx: typer.Context,
    policy: Annotated[Path, typer.Option("--policy", help="The gate's policy (TOML).")],
    key: Annotated[str, typer.Option("--key", help="The release owner's signing key.")],
    out: Annotated[Path, typer.Option("--out", help="The signed in-toto layout.")] = Path(
        "root.layout"
    ),
) -> None:
    """Export the gate policy as a signed in-toto layout. Exit 0 / 2."""
    with _guarded(ctx):
        written = write_layout(load_policy(policy), load_signer(key, _ask_passphrase(key)), out)
        typer.echo(f"layout  {written}")


def _check_progress() -> LiveCheckProgress | PlainCheckProgress:
    return LiveCheckProgress() if sys.stderr.isatty() else PlainCheckProgress()


@image_app.command("build")
def image_build(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="A name under images/, a recipe (directory or .toml), or a spec with [image]."
        ),
    ],
    update_lock: Annotated[
        bool, typer.Option("--update-lock", help="Accept the built image as the new lock.")
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build even when the locked image is loaded.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    allow_root: AllowRoot = False,
) -> None:
    """Build an image rootless, check it against its lock, load it. Exit 0 / 1 mismatch / 2."""
    with _guarded(ctx):
        config = _config(allow_root)
        refuse_root(config)
        definition = definition_for(name, ImageCatalog(config.images_dir))
        with _podman(config) as session:
            typer.echo(f"hermetic: building image {name} (mmdebstrap, rootless)…", err=True)
            outcome = build_image(
                definition,
                store=session,
                work_dir=config.work_dir,
                update_lock=update_lock,
                rebuild=rebuild,
            )
        if json_output:
            typer.echo(
                json.dumps(
                    {
                        "status": outcome.status.value,
                        "reference": outcome.built.reference,
                        "lock": json.loads(outcome.built.to_json()),
                        "package_changes": outcome.package_changes(),
                        "lock_path": str(definition.lock_path),
                    },
                    indent=2,
                )
            )
        else:
            typer.echo(render.image_outcome(outcome, definition))
        raise typer.Exit(EXIT_NEGATIVE if outcome.status is ImageBuildStatus.MISMATCH else EXIT_OK)


@image_app.command("list")
def image_list(ctx: typer.Context, allow_root: AllowRoot = False) -> None:
    """List the images under images/, their locked digests and whether they are loaded."""
    with _guarded(ctx):
        config = _config(allow_root)
        catalog = ImageCatalog(config.images_dir)
        definitions = [catalog.get(name) for name in catalog.names()]
        loaded: dict[str, bool] = {}
        if os.geteuid() != 0 or config.allow_root:
            with _podman(config) as session:
                loaded = {
                    d.name: d.lock is not None and session.image_exists(d.lock.reference)
                    for d in definitions
                }
        typer.echo(render.image_list(definitions, loaded))


def main() -> None:
    """Console entry point."""
    app()
