"""Bad input is our own error, never a traceback: property tests of the spec, sizes and
durations, and image recipes. Failures hypothesis found are kept as @example lines."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import example, find, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rebuilder.cli import app
from sandbox.errors import ImageError, SpecError
from sandbox.images import ImageRecipe
from sandbox.spec import Spec
from sandbox.units import MAX_DURATION_S, MAX_SIZE, parse_duration, parse_size
from tests.strategies import ANYTHING, SPECS, TEXT, table, toml_document

# --- sizes and durations ----------------------------------------------------------------


@given(st.one_of(ANYTHING, st.integers(), TEXT))
@example("9" * 400 + "TiB")  # float overflow: OverflowError escaped as exit 1
@example("1e999")
@example(10**15)
@example("99999999999999999999h")
@example(True)
def test_a_size_is_a_number_of_bytes_in_range_or_a_value_error(value: Any) -> None:
    try:
        size = parse_size(value)
    except ValueError:
        return
    assert isinstance(size, int) and 1 <= size <= MAX_SIZE


@given(st.one_of(ANYTHING, st.integers(), TEXT))
@example(10**15)  # a node accepted a timeout of 10^15 s
@example("99999999999999999999h")
@example("1h1h")
def test_a_duration_is_whole_seconds_in_range_or_a_value_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert isinstance(seconds, int) and 1 <= seconds <= MAX_DURATION_S


# --- the spec -------------------------------------------------------------------------------


def _check_spec(spec: Spec) -> None:
    """What a parsed spec promises the planner."""
    limits = spec.limits
    assert 1 <= limits.timeout_s <= MAX_DURATION_S
    for size in (limits.memory_bytes, limits.disk_bytes, limits.log_bytes):
        assert 1 <= size <= MAX_SIZE
    assert 1 <= limits.pids <= 4194304
    assert spec.source_date_epoch is None or 0 <= spec.source_date_epoch <= 253402300799
    assert spec.command and all("\0" not in arg for arg in spec.command)


@given(SPECS)
@example({"": []})  # an empty key was named as nothing: "hermetic.toml: : unknown key"
@example({"build": {"command": ["make"], "outputs": ["o"]}, "limits": {"timeout": 10**15}})
@example({"build": {"command": ["make"], "outputs": ["o"]}, "limits": {"pids": 2**64}})
@example({"build": {"command": ["make"], "outputs": ["o"], "source_date_epoch": 2**64}})
@example(
    {
        "build": {"command": ["make"], "outputs": ["o"]},
        "inputs": [{"url": "http://[::1", "sha256": "c" * 64, "dest": "x"}],
    }
)
def test_a_spec_document_is_a_spec_or_a_spec_error(document: dict[str, Any]) -> None:
    try:
        spec = Spec.from_document(document, path=Path("hermetic.toml"), source_dir=Path("/src"))
    except SpecError as e:
        assert e.key and e.reason and "hermetic.toml" in str(e)
        return
    _check_spec(spec)


@given(SPECS)
def test_a_spec_file_is_a_spec_or_a_spec_error(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "hermetic.toml"
        path.write_text(toml_document(document), errors="surrogatepass")
        try:
            spec = Spec.from_toml(path)
        except SpecError:
            return
    _check_spec(spec)


@given(st.binary(max_size=200))
@example(b"\xff\xfe")
@example(b"[build]\ncommand = ['make']\noutputs = ['o']\n[limits]\ntimeout = 1e999\n")
def test_any_bytes_are_a_spec_or_a_spec_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "hermetic.toml"
        path.write_bytes(data)
        with contextlib.suppress(SpecError):  # anything else fails the test
            Spec.from_toml(path)


@settings(max_examples=60)  # the parser is the one above; this is the CLI around it
@given(SPECS)
def test_the_cli_answers_a_bad_spec_with_exit_2(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "hermetic.toml"
        path.write_text(toml_document(document), errors="surrogatepass")
        try:
            Spec.from_toml(path)
        except SpecError:
            result = CliRunner().invoke(app, ["build", str(path), "--out", f"{scratch}/o"])
            assert result.exit_code == 2, (result.output, result.exception)
            assert "hermetic: error:" in result.stderr and "Traceback" not in result.output


# --- image recipes --------------------------------------------------------------------------

RECIPES = table(
    {
        "suite": TEXT,
        "mirror": TEXT,
        "source_date_epoch": st.integers(min_value=-(2**70), max_value=2**70),
    },
    {
        "description": TEXT,
        "variant": st.sampled_from(["essential", "minbase", "apt", "other"]),
        "packages": st.lists(st.sampled_from(["make", "gcc-12", "Bad Name", "-x"]), max_size=3),
        "locales": st.lists(TEXT, max_size=2),
        "strip_docs": st.booleans(),
    },
)


@given(RECIPES)
@example({"suite": "", "mirror": "", "source_date_epoch": 0})  # accepted: mmdebstrap failed later
def test_a_recipe_is_a_recipe_or_an_image_error(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "img"
        directory.mkdir()
        (directory / "recipe.toml").write_text(toml_document(document), errors="surrogatepass")
        try:
            recipe = ImageRecipe.load(directory)
        except ImageError:
            return
    assert recipe.suite and isinstance(recipe.packages, tuple)


@given(st.binary(max_size=200))
def test_any_recipe_bytes_are_a_recipe_or_an_image_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "img"
        directory.mkdir()
        (directory / "recipe.toml").write_bytes(data)
        with contextlib.suppress(ImageError):  # anything else fails the test
            ImageRecipe.load(directory)


def _parses(document: dict[str, Any]) -> bool:
    try:
        Spec.from_document(document, path=Path("hermetic.toml"), source_dir=Path("/src"))
    except SpecError:
        return False
    return True


def test_the_generated_documents_include_valid_specs() -> None:
    # Control: the strategy reaches specs that parse, so the tests above try the checks
    # past the first one too, not only documents refused at once.
    found = find(SPECS, _parses, settings=settings(max_examples=5000))
    assert "build" in found
