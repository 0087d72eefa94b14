"""What every command does alike: --version, completion, -v after the command, value-like
metavars, --json results and --json errors, every problem of a spec or policy at once,
the user id injected, and a --help that loads nothing heavy."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebuilder.cli import app
from rebuilder.cli.settings import Settings
from tests.conftest import write_spec
from tests.schemas import validate, validate_document
from tests.unit.conftest import Hermetic

GOOD = """
[build]
image = "test-image"
command = ["make"]
outputs = ["hermetic.toml"]
source_date_epoch = 1
"""
COMMANDS = [
    [],
    ["build"],
    ["check"],
    ["image", "build"],
    ["image", "list"],
    ["init"],
    ["pin", "pip"],
    ["pin", "npm"],
    ["keygen"],
    ["verify"],
    ["node", "serve"],
    ["node", "worker"],
    ["node", "token"],
    ["rebuild"],
    ["gate"],
    ["sign-policy"],
    ["layout"],
]
HEAVY = ("fastapi", "sigstore", "in_toto", "celery", "podman", "securesystemslib", "uvicorn")


def test_version_prints_the_version_and_exits_0() -> None:
    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0
    assert done.stdout.startswith("hermetic ") and done.stdout.split()[1][0].isdigit()
    # the constant it prints is the installed distribution's version (hatch reads it)
    assert done.stdout.split()[1] == importlib.metadata.version("hermetic")


def _imported_after(argv: list[str]) -> set[str]:
    """Top-level packages loaded by running ``hermetic ARGV`` in a fresh interpreter."""
    probe = (
        "import sys\n"
        "from rebuilder.cli import app\n"
        "try:\n"
        f"    app({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split("\n")[-2].split())


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["build", "--help"]])
def test_help_and_version_load_no_heavy_library(argv: list[str]) -> None:
    loaded = _imported_after(argv)
    assert "typer" in loaded and "rebuilder" in loaded  # the probe sees what was loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_import_probe_sees_a_heavy_library_when_one_is_loaded() -> None:
    """Negative control: a command that needs FastAPI's node API does load it."""
    assert "fastapi" in _imported_after(["node", "serve", "--dir", "/nonexistent", "--key", "x"])


def test_shell_completion_completes_commands_and_options() -> None:
    env = {**os.environ, "_HERMETIC_COMPLETE": "complete_bash", "COMP_WORDS": "hermetic bu"}
    env["COMP_CWORD"] = "1"
    hermetic = Path(sys.executable).parent / "hermetic"
    done = subprocess.run([str(hermetic)], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["build"], done.stdout + done.stderr
    env["COMP_WORDS"], env["COMP_CWORD"] = "hermetic build --sb", "2"
    done = subprocess.run([str(hermetic)], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["--sbom-format"], done.stdout + done.stderr


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) or "hermetic" for c in COMMANDS])
def test_help_shows_values_not_python_types(argv: list[str]) -> None:
    done = CliRunner().invoke(app, [*argv, "--help"])
    assert done.exit_code == 0
    for python_type in ("<bool>", "<path>", "<list[", "<str>", "<int>", "TEXT", "INTEGER"):
        assert python_type not in done.stdout, (argv, python_type)
    if argv:
        assert "-v, --verbose" in done.stdout


def test_verbose_after_the_command_shows_the_traceback(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD.replace("test-image", "no-such-image"))
    out = ["--out", str(tmp_path / "out")]
    quiet = hermetic("build", str(spec), *out)
    assert quiet.exit_code == 2 and "Traceback" not in quiet.stderr  # control
    assert "no image named 'no-such-image'" in quiet.stderr
    for argv in (
        ["-v", "build", str(spec)],
        ["build", str(spec), "-v"],
        ["build", "-v", str(spec)],
    ):
        loud = hermetic(*argv, *out)
        assert loud.exit_code == 2 and "Traceback" in loud.stderr, argv
        assert "no image named 'no-such-image'" in loud.stderr


def _errors(tmp_path: Path) -> list[list[str]]:
    """One argv per command that prints a result, each failing with an error."""
    existing = tmp_path / "existing"
    write_spec(existing, GOOD)
    (tmp_path / "key").write_text("taken")
    missing = str(tmp_path / "missing")
    return [
        ["build", missing],
        ["check", missing],
        ["image", "build", "no-such-image"],
        ["init", str(existing)],
        ["pin", "pip", "requirements.txt", "--spec", missing],
        ["pin", "npm", "package-lock.json", "--spec", missing],
        ["keygen", "--out", str(tmp_path / "key")],
        ["verify", missing, "--key", missing],
        ["node", "token", "--tokens", missing, "--name", "x", "--scope", "all"],
        ["rebuild", str(existing)],
        ["gate", missing, "--policy", missing],
        ["sign-policy", missing, "--key", missing],
        ["layout", "--policy", missing, "--key", missing],
    ]


def test_every_command_that_prints_a_result_prints_errors_as_json(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    cases = _errors(tmp_path)
    assert len(cases) == 13
    for argv in cases:
        human = hermetic(*argv)
        assert human.exit_code == 2 and human.stdout == "", (argv, human.output)  # control
        assert human.stderr.startswith("hermetic: error: "), argv
        done = hermetic(*argv, "--json")
        assert done.exit_code == 2, (argv, done.output)
        document = json.loads(done.stdout)
        validate_document(document)
        assert document["exit_code"] == 2 and document["error"] in human.stderr, argv


def test_results_print_as_json(tmp_path: Path, hermetic: Hermetic) -> None:
    key = hermetic("keygen", "--out", str(tmp_path / "k"), "--json")
    assert key.exit_code == 0, key.output
    made = json.loads(key.stdout)
    assert made["public_key"] == f"{tmp_path / 'k'}.pub" and len(made["keyid"]) == 64
    token = hermetic(
        "node", "token", "--tokens", str(tmp_path / "t.json"), "--name", "ci", "--scope", "read",
        "--json",
    )  # fmt: skip
    assert json.loads(token.stdout)["token"].startswith("hmt_")
    validate(json.loads((tmp_path / "t.json").read_text()), "node-tokens.schema.json")
    listed = hermetic("image", "list", "--json")
    assert listed.exit_code == 0
    (image,) = json.loads(listed.stdout)["images"]
    assert image["name"] == "test-image" and image["locked_digest"] == "sha256:" + "11" * 32
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "Makefile").write_text("all:\n\ttouch out\n")
    init = hermetic("init", str(tmp_path / "proj"), "--json")
    assert init.exit_code == 0 and json.loads(init.stdout)["build_system"] == "make"


def test_every_problem_of_a_spec_is_reported_at_once(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(
        tmp_path / "src",
        """
[build]
image = "debian:bookworm"
command = "make"
outputs = ["/etc/passwd", "ok"]
bogus = 1
env = { SOURCE_DATE_EPOCH = "1" }

[[inputs]]
url = "ftp://example.org/x"
sha256 = "00"
dest = "x"

[limits]
pids = 0
memory = "lots"
""",
    )
    done = hermetic("build", str(spec), "--json")
    assert done.exit_code == 2
    document = json.loads(done.stdout)
    validate_document(document)
    keys = [problem.split(": ")[1] for problem in document["problems"]]
    assert sorted(keys) == sorted(
        [
            "build.bogus",
            "inputs[0].url",
            "build.image",
            "build.command",
            "build.outputs[0]",
            "build.env.SOURCE_DATE_EPOCH",
            "limits.memory",
            "limits.pids",
        ]
    )
    assert document["error"].startswith(f"{spec}: 8 problems:")
    one = write_spec(tmp_path / "one", GOOD.replace('"make"', '"make", 1'))
    single = json.loads(hermetic("build", str(one), "--json").stdout)
    assert "problems" not in single and single["error"].startswith(f"{one}: build.command:")


def test_every_problem_of_a_policy_is_reported_at_once(tmp_path: Path, hermetic: Hermetic) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        """
extra = 1
[policy]
threshold = 1
max_age = "forever"
allow_loopback = "yes"
images = []
surprise = true

[[operators]]
name = "a"
keys = [{ file = "missing.pub" }]
"""
    )
    artifact = tmp_path / "a"
    artifact.write_text("x")
    done = hermetic("gate", str(artifact), "--policy", str(policy), "--json")
    assert done.exit_code == 2
    document = json.loads(done.stdout)
    validate_document(document)
    keys = sorted(problem.split(": ")[1] for problem in document["problems"])
    assert keys == [
        "extra",
        "operators[0].keys[0]",
        "policy.allow_loopback",
        "policy.images",
        "policy.max_age",
        "policy.surprise",
    ]


def test_the_user_id_is_injected_root_is_refused(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    as_root = hermetic("build", str(spec), "--out", str(tmp_path / "o"), euid=0)
    assert as_root.exit_code == 2 and "refusing to run as root" in as_root.stderr
    allowed = hermetic("build", str(spec), "--out", str(tmp_path / "o"), "--allow-root", euid=0)
    assert allowed.exit_code == 0, allowed.output  # control: the same build, allowed


def test_settings_are_read_once_from_the_environment(tmp_path: Path) -> None:
    env = {
        "HERMETIC_SIGN": "a.key, sigstore:",
        "HERMETIC_BUILDER_ID": "https://ci.example/builder",
        "HERMETIC_NODE_TOKEN": "hmt_x",
        "HERMETIC_BROKER": "redis://:p@broker/0",
        "HERMETIC_SIGSTORE_INSTANCE": "staging",
        "HERMETIC_SIGSTORE_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(tmp_path),
        "HERMETIC_STORE": str(tmp_path / "store"),
    }
    settings = Settings.from_env(env, euid=1234)
    assert settings.euid == 1234 and settings.sandbox.store_dir == tmp_path / "store"
    assert settings.signing.signing_references([]) == ["a.key", "sigstore:"]
    assert settings.signing.signing_references(["x"]) == ["x"]
    assert settings.signing.local_builder_id() == "https://ci.example/builder"
    assert settings.node.token == "hmt_x" and settings.node.broker == "redis://:p@broker/0"
    assert settings.sigstore.staging and settings.sigstore.offline
    unset = Settings.from_env({"XDG_CONFIG_HOME": str(tmp_path)}, euid=1)
    assert unset.signing.signing_references([]) == []  # no key made yet
    (tmp_path / "hermetic").mkdir()
    (tmp_path / "hermetic" / "signing-key").write_text("k")
    assert unset.signing.signing_references([]) == [str(tmp_path / "hermetic" / "signing-key")]
    none = Settings.from_env({"XDG_CONFIG_HOME": str(tmp_path), "HERMETIC_SIGN": "none"}, euid=1)
    assert none.signing.signing_references([]) == []
