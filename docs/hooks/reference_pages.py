"""MkDocs hook: generate reference/config.md and reference/cli.md from the code at build time.

The pages never exist in the repository, so they cannot drift from the schema or the parser.
"""

from mkdocs.structure.files import File

from neurodyn.cli.docs_reference import cli_reference_markdown, config_reference_markdown

GENERATED_PAGES = {
    "reference/config.md": config_reference_markdown,
    "reference/cli.md": cli_reference_markdown,
}


def on_files(files, config):
    for path, generate in GENERATED_PAGES.items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=generate()))
    return files
