"""The generated config and command-line references list every key and every flag of the code."""

import argparse

from neurodyn.cli.docs_reference import cli_reference_markdown, config_reference_markdown
from neurodyn.cli.main import build_parser
from neurodyn.config import GfrFitConfig, LfadsConfig, PbtSettings, SearchSpec


def _subparsers(parser, path):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + [name], sub
                yield from _subparsers(sub, path + [name])


def test_every_config_key_appears_with_its_default_and_description():
    page = config_reference_markdown()
    for schema in (LfadsConfig, PbtSettings, SearchSpec, GfrFitConfig):
        for key, field in schema.model_fields.items():
            rows = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
            assert rows, f"{schema.__name__}.{key} missing from the config reference"
            if field.description:
                first_words = " ".join(field.description.split()[:3]).replace("<", "&lt;").replace("|", "\\|")
                assert any(first_words in row for row in rows), f"{key}: description not in its row"


def test_bounds_of_a_key_are_shown():
    row = next(line for line in config_reference_markdown().splitlines() if line.startswith("| `valid_ratio` |"))
    assert "> 0.0" in row and "< 1.0" in row and "`0.2`" in row


def test_every_command_and_flag_appears_in_the_cli_reference():
    page = cli_reference_markdown()
    parser = build_parser()
    for path, sub in [(["neurodyn"], parser), *_subparsers(parser, ["neurodyn"])]:
        assert f" {' '.join(path)}\n" in page or path == ["neurodyn"], f"command {' '.join(path)} missing"
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, f"{' '.join(path)} {option} missing from the CLI reference"


def test_help_text_appears_in_the_cli_reference():
    page = cli_reference_markdown()
    assert "override the config's max_epochs" in page
    assert "model time step in ms" in page  # a gfr flag's help
    assert "`--bin_size`" in page  # the published spelling, listed as also accepted
