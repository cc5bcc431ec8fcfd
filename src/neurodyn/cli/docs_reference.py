"""The config and command-line references of the documentation, generated from the code.

``docs/hooks/reference_pages.py`` calls these functions while MkDocs builds the site, so the pages
``reference/config.md`` and ``reference/cli.md`` always list exactly the keys of the pydantic schema
and the flags of the argument parser. Run ``python -m neurodyn.cli.docs_reference config|cli`` to
print one of them.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Iterator

_BOUND_SYMBOLS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="))


def _text(value: str) -> str:
    """Plain text for a Markdown page or table cell: keep `code` spans, escape what Markdown would read."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(value).split()))
    escaped = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            escaped.append(part.replace("|", "\\|"))
        else:
            escaped.append(part.replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;").replace(">", "&gt;")
                           .replace("|", "\\|"))
    return "".join(escaped)


def _code(value: str) -> str:
    return "`" + str(value).replace("|", "\\|") + "`"


# ------------------------------------------------------------------------------------------------
# config reference


def _type_name(annotation) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    return _code(repr(value) if isinstance(value, str) else value)


def _bounds(field) -> str:
    found = []
    for item in field.metadata:
        for attribute, symbol in _BOUND_SYMBOLS:
            if getattr(item, attribute, None) is not None:
                found.append(f"{symbol} {getattr(item, attribute)}")
    return ", ".join(found)


def config_table(schema) -> str:
    """One Markdown table row per key of a pydantic schema: key, type, default, bounds, description."""
    rows = ["| key | type | default | bounds | description |", "|---|---|---|---|---|"]
    for name, field in schema.model_fields.items():
        rows.append(f"| `{name}` | {_code(_type_name(field.annotation))} | {_default(field)} | {_bounds(field)} | "
                    f"{_text(field.description or '')} |")
    return "\n".join(rows)


def config_reference_markdown() -> str:
    """The whole config reference page (Markdown), generated from ``neurodyn.config``."""
    from neurodyn.config import (
        DEFAULT_SEARCH_SPACE,
        SEARCHABLE_HYPERPARAMETERS,
        GfrFitConfig,
        LfadsConfig,
        PbtSettings,
        SearchSpec,
    )

    default_space = "\n".join(
        f"| `{key}` | `{spec.explore_range}` | `{spec.init_sample_mode}` |" for key, spec in DEFAULT_SEARCH_SPACE.items())
    return f"""# Config reference

<!-- Generated from src/neurodyn/config.py by docs/hooks/reference_pages.py at build time: edit the schema, not
this page. -->

A config is one flat YAML file. Every key is optional: a file holding only `run_name` is valid, and
the defaults suit a dataset like the synthetic Lorenz set. A key that is not listed here is an error
naming the closest valid key. This page is generated from the schema in `neurodyn.config` each time
the documentation is built.

## Model and training keys (`LfadsConfig`)

Read by `neurodyn train` and by `neurodyn run` (where every model key can also be given).

{config_table(LfadsConfig)}

## Population-based training keys (`PbtSettings`)

Read by `neurodyn run`, in the same file as the model keys.

{config_table(PbtSettings)}

## Search settings of one hyperparameter (`SearchSpec`)

In a `neurodyn run` config, a model key whose value is a mapping of these keys is searched by PBT;
a plain value fixes it. Searchable keys: {", ".join(f"`{key}`" for key in SEARCHABLE_HYPERPARAMETERS)}
(architecture keys are fixed, because workers copy each other's weights).

{config_table(SearchSpec)}

With no search settings at all, `neurodyn run` searches the published AutoLFADS space (minus the
keys the config fixes, and minus `l2_con_scale` and `kl_co_weight` when the model has no controller:
`co_dim: 0`, or `co_dim: auto` resolved to 0 from sparse data):

| key | `explore_range` | `init_sample_mode` |
|---|---|---|
{default_space}

## GFR fitting keys (`GfrFitConfig`)

Read by `neurodyn gfr fit --config-path CONFIG.json` (JSON, every key optional).

{config_table(GfrFitConfig)}
"""


# ------------------------------------------------------------------------------------------------
# command-line reference


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], argparse.ArgumentParser,
                                                                                  str]]:
    """Every parser reachable from ``parser`` with its command path and help line, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + [name], sub, helps.get(name) or ""
                yield from _commands(sub, path + [name])


def _argument_line(action: argparse.Action) -> str:
    if action.option_strings:
        if action.nargs == 0:
            name = ", ".join(action.option_strings)
        else:
            metavar = action.metavar or action.dest.upper()
            metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
            name = ", ".join(f"{option} {metavar}" for option in action.option_strings)
    else:
        name = action.metavar or action.dest
    details = [_text(action.help or "")]
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        details.append("one of " + ", ".join(_code(choice) for choice in action.choices))
    if action.required and action.option_strings:
        details.append("required")
    return f"- {_code(name)}: " + "; ".join(detail for detail in details if detail)


def cli_reference_markdown() -> str:
    """The whole command-line reference page (Markdown), generated from ``build_parser()``."""
    from neurodyn.cli.main import build_parser

    parser = build_parser()
    lines = ["# Command-line reference", "",
             "<!-- Generated from neurodyn.cli.main.build_parser() by docs/hooks/reference_pages.py at build "
             "time. -->", "",
             "Every command prints `neurodyn: error: ...` (one line naming the file, key and what was expected) "
             "for bad input and exits with status 2. `neurodyn COMMAND --help` prints the same text as this page, "
             "which is generated from the argument parser each time the documentation is built.", "",
             "## neurodyn", "", _text(parser.description or ""), "", "```text", parser.format_usage().strip(), "```", ""]
    lines += [_argument_line(action) for action in parser._actions
              if action.option_strings and action.help is not argparse.SUPPRESS]
    lines.append("")
    for path, sub, help_line in _commands(parser, ["neurodyn"]):
        lines += [f"{'#' * min(len(path) + 1, 4)} {' '.join(path)}", "", _text(help_line[:1].upper() + help_line[1:]) + ".",
                  ""]
        if sub.description and sub.description != help_line:
            lines += [_text(sub.description), ""]
        lines += ["```text", sub.format_usage().strip(), "```", ""]
        shown = [action for action in sub._actions if not isinstance(action, (argparse._HelpAction,
                                                                              argparse._SubParsersAction))]
        visible = [action for action in shown if action.help is not argparse.SUPPRESS]
        hidden = [action for action in shown if action.help is argparse.SUPPRESS]
        lines += [_argument_line(action) for action in visible]
        if hidden:
            lines.append("- also accepted, the published pipeline's spellings: "
                         + ", ".join(_code(option) for action in hidden for option in action.option_strings))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    pages = {"config": config_reference_markdown, "cli": cli_reference_markdown}
    if len(sys.argv) != 2 or sys.argv[1] not in pages:
        sys.exit("usage: python -m neurodyn.cli.docs_reference config|cli")
    print(pages[sys.argv[1]]())
