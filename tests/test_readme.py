"""The README documents every config key and the CI runs the README's test command."""

from pathlib import Path

from neurodyn.config import GfrFitConfig, LfadsConfig, PbtSettings, SearchSpec

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented():
    readme = (ROOT / "README.md").read_text()
    keys = [*LfadsConfig.model_fields, *PbtSettings.model_fields, *SearchSpec.model_fields, *GfrFitConfig.model_fields]
    missing = [key for key in keys if f"| `{key}` |" not in readme]
    assert not missing, f"config keys missing from the README table: {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/demo.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
