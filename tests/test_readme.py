"""README's commands must stay runnable: every `python ENTRY.py ...` it shows parses with that script's
own parser (no stale flags), and it opens with exactly the two newcomer commands that .ci/run uses."""
import os
import re
import shlex

import pytest

from tests.conftest import ROOT
from tests.test_scripts import ENTRY_MODULES, check_parses

README = open(os.path.join(ROOT, "README.md")).read()


def readme_commands() -> list[str]:
    """`python X.py ...` commands in code spans and blocks (placeholder '...' dropped; `|` alternatives
    in a --format choice kept as the first)."""
    spans = re.findall(r"`([^`\n]+)`", README) + re.findall(r"```bash\n(.*?)```", README, re.S)
    cmds = []
    for span in spans:
        for part in re.split(r"\s+→\s+|;\s+", span):
            m = re.search(r"(?:^|&& )(?:\.venv/bin/)?python (-m \S+|\S+\.py)(.*)$", part.strip())
            if m and (m.group(1).split()[-1] in ENTRY_MODULES or m.group(1).startswith("-m core.")):
                cmds.append(m.group(1) + m.group(2))
    return cmds


COMMANDS = readme_commands()


def test_readme_opens_with_the_two_commands_ci_runs():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert first[0] == "bash environments.sh && bash scripts/digits_demo.sh"
    assert first[1] == "bash environments.sh && .venv/bin/python -m pytest"
    assert first[1] in open(os.path.join(ROOT, ".ci", "run")).read()


def test_readme_has_commands():
    assert len(COMMANDS) >= 12


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_parses(cmd):
    argv = [a for a in shlex.split(cmd.replace("\\|", "|")) if a != "..."]
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
        if module == "core.blackbox":
            from core.runs.blackbox import get_args_parser
            get_args_parser().parse_args(args)
            return
        module = ENTRY_MODULES[module]
    else:
        module, args = ENTRY_MODULES[argv[0]], argv[1:]
    args = [a.split("|")[0] if "|" in a else a for a in args]
    check_parses(module, args, cmd)
