"""README.md and docs/*.md: every relative link resolves (and its #anchor names a heading), every repository path
they name exists, README.md stays a front door, and every docs page is linked from it and links back.

A failure names the markdown file and line of each broken reference (`docs/scoring.md:12: ...`).
"""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).parents[1]
README_MAX_LINES = 220
# A path that starts with one of these names a file or folder of this repository, relative to its root.
TOP_LEVEL = ("cluster", "trainer", "data", "configs", "scripts", "tests", "docs")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`[^`\n]*`")
# The target of [text](target) and ![alt](target), optionally in <...> and followed by a "title". Matched from the
# "](" on, so that a link whose text runs over two lines is still seen on the line that holds its target.
LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...: not checked
# A token that starts with a top-level folder and a slash (not inside a longer path or word), or README.md /
# pyproject.toml. The character class takes in placeholders and globs so that such tokens are seen whole and left
# out, rather than cut short at the first odd character and checked as a prefix.
REPO_PATH = re.compile(r"(?<![\w./$<>*@-])((?:%s)/[\w./*<>${}@+-]*|README\.md(?![\w.])|pyproject\.toml(?![\w.]))"
                       % "|".join(TOP_LEVEL))
NOT_A_PATH = set("*<>${}@")  # a glob or a placeholder (<run_dir>, ${x}, $i): names no one file


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def lines_outside_code(text: str):
    """(line number, line, inside a fenced code block) for every line."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            yield number, line, True
            fenced = not fenced
            continue
        yield number, line, fenced


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup reduced to its text, lowercase, punctuation other than - and _
    dropped, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line, fenced in lines_outside_code(path.read_text(encoding="utf-8")):
        match = None if fenced else HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(path: Path, number: int, line: str) -> list[str]:
    problems = []
    for target in LINK.findall(INLINE_CODE.sub("", line)):
        if not target or SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{rel(path)}:{number}"
        if not resolved.exists():
            problems.append(f"{where}: link target {target} does not exist ({rel(resolved)})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: link {target}: {rel(resolved)} has no heading with anchor #{anchor}")
    return problems


def path_problems(path: Path, number: int, line: str, root: Path) -> list[str]:
    problems = []
    for token in REPO_PATH.findall(line):
        token = token.rstrip(".")
        if NOT_A_PATH & set(token) or "/" not in token and token not in ("README.md", "pyproject.toml"):
            continue
        if not (root / token).exists():
            problems.append(f"{rel(path)}:{number}: path {token} does not exist in the repository")
    return problems


def problems(path: Path, root: Path = ROOT) -> list[str]:
    """Every broken link, anchor and repository path in one markdown file, as 'file:line: what'."""
    found = []
    for number, line, fenced in lines_outside_code(path.read_text(encoding="utf-8")):
        if not fenced:  # a link in a code block is text, not a link
            found += link_problems(path, number, line)
            line = LINK_TARGET.sub("]()", line)  # checked above, relative to the file, not the repository root
        found += path_problems(path, number, line, root)
    return found


@pytest.mark.parametrize("path", markdown_files(), ids=rel)
def test_links_anchors_and_paths_resolve(path):
    found = problems(path)
    assert not found, "broken references:\n" + "\n".join(found)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (f"README.md has {len(lines)} lines, at most {README_MAX_LINES}: move "
                                            f"the detail to a page under docs/")


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
    readme_links = {target.partition("#")[0] for target in LINK.findall((ROOT / "README.md").read_text())}
    missing = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        if f"docs/{page.name}" not in readme_links:
            missing.append(f"README.md: no link to docs/{page.name}")
        if "../README.md" not in {t.partition("#")[0] for t in LINK.findall(page.read_text(encoding="utf-8"))}:
            missing.append(f"{rel(page)}: no link back to ../README.md")
    assert not missing, "\n".join(missing)


def test_the_checker_finds_what_is_broken(tmp_path):
    """The checks themselves, on a small tree: what passes, and that each kind of break is named with its line."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.py").write_text("")
    (tmp_path / "docs" / "page.md").write_text("# A page: `fightwatch run`\n\n## The Intel lane: IPEX 2.8, again\n"
                                               "```bash\n# not a heading\n```\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n"
        "[ok](docs/page.md) [ok](docs/page.md#a-page-fightwatch-run) [ok](docs/page.md#the-intel-lane-ipex-28-again)\n"
        "[web](https://example.org/x) [mail](mailto:a@b.c) [self](#title) ![img](docs/page.md)\n"
        "`scripts/run.py::test_x` `scripts/run.py:12` `scripts/run.py`. `runs/demo/model.pth` `scripts/*.py`\n"
        "`scripts/<name>.py` /data/hockey `docs/` python scripts/run.py --config x\n"
        "[gone](docs/gone.md)\n"
        "[bad anchor](docs/page.md#not-a-heading) [bad self](#nowhere) [a link over\n"
        "two lines](docs/page.md#gone) `scripts/missing.py` and python scripts/bench/missing.py\n"
        "```bash\n[not a link](nothing.md) configs/missing.yaml\n```\n")
    found = problems(readme, tmp_path)
    assert [p.split(":")[1] for p in found] == ["6", "7", "7", "8", "8", "8", "10"], found
    assert "README.md:6: link target docs/gone.md does not exist" in found[0]
    assert "#not-a-heading" in found[1] and "#nowhere" in found[2] and "#gone" in found[3]
    assert "scripts/missing.py" in found[4] and "scripts/bench/missing.py" in found[5]
    assert "configs/missing.yaml" in found[6]
