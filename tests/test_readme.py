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


def test_the_gpu_check_script_names_files_and_options_that_exist():
    """scripts/gpu_checks.sh runs only on a GPU machine, so a renamed test file or benchmark option
    would go unnoticed here: every test file and bench script it names exists and takes the options it
    is given."""
    import re
    import subprocess
    import sys

    lines = (ROOT / "scripts" / "gpu_checks.sh").read_text().replace("\\\n", " ").splitlines()
    named = {path for line in lines for path in re.findall(r"(?:tests|bench)/\w+\.py", line)}
    assert {"bench/population.py", "bench/population_profile.py", "tests/test_cuda_graphs.py"} <= named
    for path in named:
        assert (ROOT / path).is_file(), path
    for bench in ("bench/population.py", "bench/population_profile.py"):
        usage = subprocess.run([sys.executable, str(ROOT / bench), "--help"], capture_output=True, text=True,
                               check=True).stdout
        given = {option for line in lines if bench in line
                 for option in re.findall(r"--[\w-]+", line.split(bench, 1)[1])}
        assert given and given <= set(re.findall(r"--[\w-]+", usage)), (bench, given)
