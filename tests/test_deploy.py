"""What deploys blogflow stays in step with the code: the SDK container's Beam version, the
Flex Template metadata of every pipeline, and setup.py as Beam's ``--setup_file``."""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tarfile
from pathlib import Path

import apache_beam
import pytest
from apache_beam.runners.portability.stager import Stager
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from blogflow.cli import PIPELINES
from blogflow.runners import flex_template
from blogflow.runners.flex_template import flex_argv, job_parser, render

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "deploy" / "flex-template"
REGENERATE = "python -m blogflow.runners.flex_template --all deploy/flex-template"


def _setup_literal(name: str):
    """A literal assigned at the top of setup.py (REQUIRED, EXTRAS), read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no {name}")


def _beam_pin() -> SpecifierSet:
    (beam,) = [Requirement(r) for r in _setup_literal("REQUIRED") if r.startswith("apache-beam")]
    return beam.specifier


def _base_image(dockerfile: Path) -> str:
    (line,) = [line for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
    return line.split()[1]


def test_the_sdk_container_is_the_pinned_and_installed_beam():
    image, _, tag = _base_image(ROOT / "Dockerfile").partition(":")
    assert image == "apache/beam_python3.11_sdk"
    assert tag == apache_beam.__version__, (
        f"Dockerfile's base image is Beam {tag}, the installed apache-beam is "
        f"{apache_beam.__version__}: make them one version"
    )
    assert tag in _beam_pin(), f"Dockerfile's Beam {tag} is outside setup.py's {_beam_pin()}"


def test_the_images_have_one_python():
    sdk = re.search(r"python(\d)\.(\d+)_sdk", _base_image(ROOT / "Dockerfile"))
    launcher = re.search(r"python(\d)(\d+)-template", _base_image(TEMPLATES / "Dockerfile"))
    assert sdk and launcher
    assert sdk.groups() == launcher.groups()
    assert launcher.groups() == (str(sys.version_info.major), str(sys.version_info.minor))


def test_the_dataflow_extra_is_the_pinned_beam_with_gcp():
    (extra,) = [Requirement(r) for r in _setup_literal("EXTRAS")["dataflow"]]
    assert (extra.name, extra.extras, extra.specifier) == ("apache-beam", {"gcp"}, _beam_pin())


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_the_committed_template_is_what_the_options_generate(name):
    path = TEMPLATES / f"{name}.json"
    assert path.exists(), f"{path} is missing: {REGENERATE}"
    assert path.read_text() == render(name), (
        f"{path.relative_to(ROOT)} is stale (the options changed): {REGENERATE}"
    )


def _parameters(name: str) -> dict[str, dict]:
    document = json.loads((TEMPLATES / f"{name}.json").read_text())
    assert document["name"] == f"blogflow-{name}"
    return {parameter["name"]: parameter for parameter in document["parameters"]}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_parameter_is_a_flag_of_the_job(name):
    flags = {flag for action in job_parser(name)._actions for flag in action.option_strings}
    for parameter in _parameters(name).values():
        assert f"--{parameter['name']}" in flags
        assert parameter["label"] and parameter["helpText"]


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_flag_of_the_jobs_options_is_a_parameter(name):
    """Read from the job's option classes themselves, not through the generator."""
    parser = argparse.ArgumentParser()
    for option_class in flex_template._job(name).options:
        option_class._add_argparse_args(parser)
    parameters = _parameters(name)
    for action in parser._actions:
        if action.option_strings and action.dest != "help" and action.help != argparse.SUPPRESS:
            assert set(action.option_strings) & {f"--{p}" for p in parameters}, action.dest
    assert not parameters["source"]["isOptional"]


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_a_defaults_value_matches_its_parameters_regexes(name):
    for action in job_parser(name)._actions:
        parameter = _parameters(name).get(action.dest)
        if parameter is None or action.default in (None, False) or "regexes" not in parameter:
            continue
        for regex in parameter["regexes"]:
            assert re.fullmatch(regex, str(action.default)), (action.dest, regex)


def test_switches_take_true_or_false_as_the_launcher_passes_them():
    argv = ["--source=sqs://q", "--drain=true", "--idle_timeout=2", "--max_records=3"]
    assert flex_argv("summing", argv) == ["--source=sqs://q", "--drain", *argv[2:]]
    assert flex_argv("summing", ["--drain=false"]) == []
    with pytest.raises(SystemExit, match="--drain takes true or false"):
        flex_argv("summing", ["--drain=yes"])
    options = flex_template._job("summing").parse(flex_argv("summing", argv))
    assert options.get_all_options()["drain"] is True
    assert options.get_all_options()["idle_timeout"] == 2.0


def test_setup_py_works_as_beams_setup_file(tmp_path):
    """Beam's stager builds the sdist workers install from ``--setup_file``: it holds every
    module of the package, and the requirements that make workers able to run them."""
    sdist = Stager._build_setup_package(str(ROOT / "setup.py"), str(tmp_path))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        (requires_txt,) = [m for m in archive.getmembers() if m.name.endswith("/requires.txt")]
        requires_text = archive.extractfile(requires_txt).read().decode()
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "blogflow").rglob("*.py")}
    assert modules <= names
    assert "blogflow/py.typed" in names
    # what pip installs on the workers: the requirements before the first [extra] section
    base = requires_text.split("\n[", 1)[0].split()
    requires = {Requirement(line).name for line in base}
    assert {Requirement(r).name for r in _setup_literal("REQUIRED")} <= requires
