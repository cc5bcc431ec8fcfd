"""The README stays short and names the two set-up commands, and CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024, f"README.md is {len(readme.encode())} bytes; keep it under 12 KB"
    assert "bash scripts/test.sh" in readme and "bash scripts/demo.sh" in readme


def test_ci_runs_the_readme_test_command_then_builds_the_docs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/docs.sh build" in ci
    assert ci.index("bash scripts/test.sh") < ci.index("bash scripts/docs.sh build")
    assert "--strict" in (ROOT / "scripts" / "docs.sh").read_text()


def test_user_pages_name_published_systems_not_internal_documents():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text().lower()
        for phrase in ("seed 000", "seed 001", "seed 002", "seed 003", "seed 004", "the seed's", "seed's service"):
            assert phrase not in text, f"{page.relative_to(ROOT)} mentions {phrase!r}"
