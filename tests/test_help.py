"""`--help` says what every argument is, for every command a user can type."""

from __future__ import annotations

import argparse

import pytest

from batchgen.cli.main import build_parser


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(f"{name} {sub}".strip(), child)

    walk("", build_parser())
    return found


@pytest.mark.parametrize(("name", "parser"), commands(), ids=lambda v: str(v) or "batchgen")
def test_every_argument_has_a_description(name: str, parser: argparse.ArgumentParser) -> None:
    silent = [
        action.dest
        for action in parser._actions
        if action.help is None and not isinstance(action, argparse._SubParsersAction)
    ]
    assert not silent, f"batchgen {name}: no help for {silent}"
