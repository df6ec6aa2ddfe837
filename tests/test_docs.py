"""The handbook builds strictly, its generated pages are current, and the README stays a front page.

The reference pages and bcpay.toml.example are generated from the code by scripts/docs_reference.py;
a setting without a description stops that generator, naming it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bcpay.config import ServerSettings, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from docs_reference import COMMAND, stale  # noqa: E402
from docs_settings import Undocumented, missing_descriptions, settings_page, toml_example  # noqa: E402

README = ROOT / "README.md"
SCREENSHOTS = ROOT / "docs" / "screenshots"


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the handbook at ``root`` into ``site``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0, on every build
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False,
    )


def test_the_handbook_builds_strict(tmp_path: Path) -> None:
    """No broken link, missing anchor, page left out of the nav or missing included file."""
    done = build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    architecture = (tmp_path / "site" / "how-it-works" / "architecture" / "index.html").read_text(encoding="utf-8")
    assert "One payment, snippet to order update" in architecture  # ARCHITECTURE.md itself, included
    metrics = (tmp_path / "site" / "operations" / "logs-and-metrics" / "index.html").read_text(encoding="utf-8")
    assert "bcpay_outbox_dead" in metrics and "bcpay_jobs_total" in metrics  # the generated tables, included


def copy_of_the_handbook(tmp_path: Path) -> Path:
    """The repository's handbook and the files its pages include, in a scratch folder."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", root / "docs")
    for name in ("mkdocs.yml", "README.md", "ARCHITECTURE.md"):
        shutil.copy(ROOT / name, root / name)
    return root


def test_a_broken_link_a_missing_anchor_and_a_page_out_of_the_nav_fail_the_build(tmp_path: Path) -> None:
    """Control: the strict build is strict about each thing the handbook promises."""
    root = copy_of_the_handbook(tmp_path)
    index = root / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\n[gone](no-such-page.md) "
                     "[nowhere](reference/settings.md#payments.no_such_setting)\n", encoding="utf-8")
    (root / "docs" / "features" / "stray.md").write_text("# A page in no nav\n", encoding="utf-8")
    done = build(root, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no-such-page.md" in output and "#payments.no_such_setting" in output
    assert "features/stray.md" in output


def test_the_generated_pages_and_the_example_file_are_current() -> None:
    assert stale() == [], f"generated from the code and changed since: run {COMMAND}"


def test_every_setting_has_a_description() -> None:
    assert missing_descriptions(Settings) == []


@dataclass(frozen=True)
class PartlyDocumented:
    """A section with one setting documented and one not."""

    port: int = 1
    """The port."""
    retries: int = 3


@dataclass(frozen=True)
class WithAnUndocumentedSetting:
    """Settings where someone added a setting and forgot its description."""

    server: ServerSettings = field(default_factory=ServerSettings)
    extra: PartlyDocumented = field(default_factory=PartlyDocumented)


def test_a_setting_without_a_description_is_named_and_stops_the_generator() -> None:
    """A setting added without its description fails the reference before it reaches a page."""
    assert missing_descriptions(WithAnUndocumentedSetting) == ["extra.retries"]
    with pytest.raises(Undocumented, match=r"settings without a description: extra\.retries\. Write one"):
        settings_page(WithAnUndocumentedSetting)
    with pytest.raises(Undocumented, match=r"extra\.retries"):
        toml_example(WithAnUndocumentedSetting)


def test_a_generated_file_that_differs_from_the_code_is_stale(tmp_path: Path) -> None:
    """Control: one changed line in a generated page, and that page (only) is reported."""
    root = copy_of_the_handbook(tmp_path)
    shutil.copy(ROOT / "bcpay.toml.example", root / "bcpay.toml.example")
    settings = root / "docs" / "reference" / "settings.md"
    settings.write_text(settings.read_text(encoding="utf-8").replace("`BCPAY_SERVER_PORT`", "`PORT`"),
                        encoding="utf-8")
    assert stale(root) == ["docs/reference/settings.md"]
    (root / "docs" / "reference" / "errors.md").unlink()
    assert stale(root) == ["docs/reference/settings.md", "docs/reference/errors.md"]


def test_the_generator_runs_as_the_command_the_handbook_gives() -> None:
    """``scripts/docs_reference.py --check`` runs from the repository root and finds nothing stale."""
    done = subprocess.run([sys.executable, "scripts/docs_reference.py", "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_example_file_loads_to_the_defaults(tmp_path: Path) -> None:
    """bcpay.toml.example is a valid config that changes nothing, with every setting in it."""
    example = ROOT / "bcpay.toml.example"
    assert load_settings(example, environ={}) == Settings()
    text = example.read_text(encoding="utf-8")
    sections = {name: [f.name for f in cls.__dataclass_fields__.values()]
                for name, cls in ((n, type(getattr(Settings(), n))) for n in Settings.__dataclass_fields__)}
    for section, keys in sections.items():
        assert f"\n[{section}]\n" in text, section
        for key in keys:
            assert re.search(rf"^{key} = ", text, re.MULTILINE), f"{section}.{key}"


def test_every_screenshot_is_shown_and_taken_by_a_browser_test() -> None:
    """docs/screenshots holds the browser tests' pictures that a page shows, and nothing else."""
    pages = "\n".join(p.read_text(encoding="utf-8") for p in [README, *(ROOT / "docs").rglob("*.md")])
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests" / "browser").glob("*.py"))
    pictures = sorted(p.name for p in SCREENSHOTS.glob("*.png"))
    assert len(pictures) >= 8
    assert [p for p in pictures if f"screenshots/{p}" not in pages] == []
    # A browser test names each picture: e2e-<name>.png by its <name>, the others whole.
    assert [p for p in pictures if f'"{p.removeprefix("e2e-").removesuffix(".png")}"' not in tests
            and f'"{p}"' not in tests] == []
    shown = set(re.findall(r"screenshots/([\w.-]+\.png)", pages))
    assert sorted(shown - set(pictures)) == []


def test_the_readme_is_a_front_page_that_leads_into_the_handbook() -> None:
    """At most about 150 lines: the two set-up commands, the walkthrough, and links that resolve."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/bcpay sandbox" in text
    assert "\nscripts/test\n" in text
    links = re.findall(r"\]\(((?:docs/|ARCHITECTURE)[^)#]*)(?:#[^)]*)?\)", text)
    assert [link for link in links if not (ROOT / link).exists()] == []
    for page in ("docs/runbooks/index.md", "docs/merchant/install.md", "docs/sandbox.md",
                 "docs/operations/index.md", "docs/reference/settings.md"):
        assert page in links, page
    runbooks = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "runbooks").glob("*.md"))
    assert [p for p in runbooks if p not in links] == []  # every runbook is one click from the README
