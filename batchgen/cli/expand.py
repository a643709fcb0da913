"""expand_cli: the `expand` and `templates` commands of the CLI.

Apart from `expand.py` so that building the CLI's parser (every command, and
`--help`) does not import the recipe machinery: that was ~80 ms a start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from batchgen.errors import EXIT_OK, EXIT_USAGE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``expand`` and ``templates list|show`` to the main CLI."""
    expand = subparsers.add_parser(
        "expand",
        help="expand a recipe (TOML) into the JSONL jobs it will send",
        description="Expand a recipe and its product sheet into jobs, after checking every row.",
    )
    expand.add_argument("recipe", type=Path, help="recipe file (.toml)")
    expand.add_argument(
        "-o", "--output", type=Path, default=None, help="write JSONL here (default: stdout)"
    )
    expand.set_defaults(func=_cmd_expand)

    templates = subparsers.add_parser(
        "templates", help="list or show prompt templates", description="Prompt templates."
    )
    sub = templates.add_subparsers(dest="templates_command", metavar="{list,show}")
    sub.required = True
    listing = sub.add_parser("list", help="list built-in and user templates")
    listing.add_argument("--dir", type=Path, default=None, help="user templates folder")
    listing.set_defaults(func=_cmd_templates_list)
    show = sub.add_parser("show", help="show one template")
    show.add_argument("name", help="template name or path to a .toml file")
    show.add_argument("--dir", type=Path, default=None, help="user templates folder")
    show.set_defaults(func=_cmd_templates_show)


def _cmd_expand(args: argparse.Namespace) -> int:
    from batchgen.errors import InputError
    from batchgen.recipes.expand import expand_recipe, write_expanded

    try:
        if args.output is not None:
            count = write_expanded(args.recipe, args.output)
            sys.stderr.write(f"wrote {count} jobs to {args.output}\n")
            return EXIT_OK
        for job in expand_recipe(args.recipe):
            sys.stdout.write(json.dumps(job, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except InputError as exc:
        sys.stderr.write(exc.render() + "\n")
        return exc.exit_code
    except BrokenPipeError:
        # `batchgen expand r.toml | head`: stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError as exc:
        sys.stderr.write(f"batchgen expand: {exc}\n")
        return EXIT_USAGE
    return EXIT_OK


def _cmd_templates_list(args: argparse.Namespace) -> int:
    from batchgen.errors import UsageError
    from batchgen.recipes.templates import builtin_dir, list_templates

    try:
        templates = list_templates(args.dir)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    builtin_parent = builtin_dir()
    builtin = {p.stem for p in builtin_parent.glob("*.toml")}
    width = max((len(t.name) for t in templates), default=0)
    for t in templates:
        origin = "" if t.path is not None and t.path.parent == builtin_parent else " (user)"
        if t.name in builtin and origin:
            origin = " (user, overrides built-in)"
        if t.kind == "style":
            detail = f'style preset: recipes append it with style = "{t.name}"'
        else:
            detail = f"fields: {', '.join(t.fields) or '-'}"
            detail += "; edits a reference photo" if t.edit else ""
            detail += f"; aspect {t.aspect_ratio}" if t.aspect_ratio else ""
        sys.stdout.write(f"{t.name:<{width}}  v{t.version}  {t.description}{origin}\n")
        sys.stdout.write(f"{'':<{width}}      {detail}\n")
    return EXIT_OK


def _cmd_templates_show(args: argparse.Namespace) -> int:
    from batchgen.errors import UsageError
    from batchgen.recipes.templates import load_template

    try:
        t = load_template(args.name, args.dir)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    lines = [
        f"{t.name}  v{t.version}  ({t.kind})",
        t.description,
        f"file: {t.path}",
        f"fields: {', '.join(t.fields) or '-'}",
        f"edit: {'yes, expects a reference photo' if t.edit else 'no'}",
        f"aspect_ratio: {t.aspect_ratio or '-'}",
        "",
        t.pattern,
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
