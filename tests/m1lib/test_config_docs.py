from __future__ import annotations

import shutil
from pathlib import Path

from m1lib import config_docs
from m1lib.cli import main
from m1lib.settings import PROJECT_ROOT, iter_setting_docs


def test_readme_table_and_env_example_are_current() -> None:
    stale = config_docs.write_docs(PROJECT_ROOT, check=True)
    assert stale == [], f"stale generated docs: {stale}; run `m1 config docs`"


def test_check_reports_a_stale_copy(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / ".env.example").write_text("# old\n")
    assert main(["config", "docs", "--check", "--root", str(tmp_path)]) == 1
    assert main(["config", "docs", "--root", str(tmp_path)]) == 0
    assert main(["config", "docs", "--check", "--root", str(tmp_path)]) == 0


def test_every_variable_is_documented_in_both_files() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = (PROJECT_ROOT / ".env.example").read_text()
    for doc in iter_setting_docs():
        assert f"`{doc.name}`" in readme
        assert f"# {doc.name}=" in example
