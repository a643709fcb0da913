"""Parse one entry of a recipe: a ``[pack]`` entry, a ``[[jobs]]`` entry, or the
recipe's own top-level keys.

Consumes an entry's TOML table and the settings it inherits; produces its
`Settings` and, with its template attached, its `Spec`. Every problem is
collected (never raised) so the user sees them all at once; the schema is
documented in `batchgen.recipes.schema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import InputProblem, UsageError
from batchgen.output.sizes import parse_size
from batchgen.recipes.templates import Template, check_aspect_ratio, load_template, pattern_fields

MAX_VARIANTS = 100

ENTRY_KEYS = frozenset(("template", "prompt", "images", "style", "sizes", "tags"))
ENTRY_KEYS |= {"aspect_ratio", "priority", "model", "variants"}


@dataclass(frozen=True)
class Settings:
    """What a pack entry or a [[jobs]] entry inherits from the recipe."""

    style: str | None = None
    images: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    aspect_ratio: str | None = None
    variants: int = 1
    priority: int | str = 0
    model: str | None = None


# kw_only: a spec's own fields have no default, unlike the settings it extends.
@dataclass(frozen=True, kw_only=True)
class Spec(Settings):
    """One kind of job made from every row (a pack entry, or the recipe itself):
    an entry's settings with its template attached."""

    where: str
    suffix: str | None
    template: Template

    def fields(self) -> dict[str, str]:
        """Field name -> where it is needed."""
        used: dict[str, str] = {}
        for name in self.template.fields:
            used.setdefault(name, f"{self.where} template {self.template.name!r}")
        patterns = [self.style or "", *self.images, *self.tags]
        if isinstance(self.priority, str):
            patterns.append(self.priority)
        for pattern in patterns:
            for name in pattern_fields(pattern):
                used.setdefault(name, self.where)
        return used

    def job_base(self, base_id: str) -> str:
        """The id of this spec's job for a row, before matrix slugs and variants."""
        return f"{base_id}-{self.suffix}" if self.suffix else base_id


class EntryParser:
    """Parses entries, collecting every problem. `batchgen.recipes.schema`'s loader
    extends it with the recipe's top-level tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.problems: list[InputProblem] = []
        self.templates_dir: Path | None = None

    def problem(self, key: str, message: str) -> None:
        self.problems.append(InputProblem(str(self.path), 0, key, message))

    def entry_settings(
        self, entry: Mapping[str, object], where: str, defaults: Settings
    ) -> Settings:
        """Settings of an entry; unset keys inherit from `defaults` (tags add up)."""
        style = defaults.style
        if "style" in entry:
            style = self.load_style(entry["style"], _key(where, "style"))
        images = defaults.images
        if "images" in entry:
            images = self.str_list(entry, "images", where)
        tags = defaults.tags + self.str_list(entry, "tags", where)
        sizes = self.load_sizes(entry, where) if "sizes" in entry else defaults.sizes
        aspect_ratio = defaults.aspect_ratio
        if "aspect_ratio" in entry:
            aspect_ratio = self.opt_str(entry, "aspect_ratio", where)
            try:
                check_aspect_ratio(aspect_ratio)
            except ValueError as exc:
                self.problem(_key(where, "aspect_ratio"), str(exc))
        variants = defaults.variants
        if "variants" in entry:
            value = entry["variants"]
            if not isinstance(value, int) or isinstance(value, bool):
                self.problem(_key(where, "variants"), "must be an integer")
            elif not 1 <= value <= MAX_VARIANTS:
                self.problem(_key(where, "variants"), f"must be between 1 and {MAX_VARIANTS}")
            else:
                variants = value
        priority = defaults.priority
        if "priority" in entry:
            raw = entry["priority"]
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                self.problem(_key(where, "priority"), "must be an integer or a pattern")
            else:
                priority = raw
                if isinstance(raw, str):
                    self.check_pattern(_key(where, "priority"), raw)
        model = self.opt_str(entry, "model", where) if "model" in entry else defaults.model
        for name, patterns in (("images", images), ("tags", tags)):
            for index, pattern in enumerate(patterns):
                self.check_pattern(f"{_key(where, name)}[{index}]", pattern)
        return Settings(style, images, tags, sizes, aspect_ratio, variants, priority, model)

    def make_spec(
        self, entry: Mapping[str, object], where: str, settings: Settings, *, suffix: str | None
    ) -> Spec | None:
        """Attach the entry's template to its settings, checking they fit together."""
        before = len(self.problems)
        template = self.entry_template(entry, where)
        if template is None:
            return None
        if template.kind == "style":
            self.problem(_key(where, "template"), f"{template.name!r} is a style preset; use style")
            return None
        if template.edit and not settings.images:
            self.problem(
                _key(where, "images"),
                f"template {template.name!r} edits a reference photo: give the job images",
            )
        if len(self.problems) > before:
            return None
        return Spec(
            where=where,
            suffix=suffix,
            template=template,
            style=settings.style,
            images=settings.images,
            aspect_ratio=settings.aspect_ratio or template.aspect_ratio,
            tags=settings.tags,
            sizes=settings.sizes,
            variants=settings.variants,
            priority=settings.priority,
            model=settings.model,
        )

    def entry_template(self, entry: Mapping[str, object], where: str) -> Template | None:
        has_t, has_p = "template" in entry, "prompt" in entry
        if has_t and has_p:
            self.problem(where, "give template or prompt, not both")
            return None
        if has_p:
            prompt = entry["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                self.problem(_key(where, "prompt"), "must be a non-empty string")
                return None
            try:
                return Template.inline(f"{where}.prompt", prompt.strip())
            except ValueError as exc:
                self.problem(_key(where, "prompt"), str(exc))
                return None
        if has_t:
            name = entry["template"]
            if not isinstance(name, str):
                self.problem(_key(where, "template"), "must be a template name or path")
                return None
            return self.find_template(name, _key(where, "template"))
        self.problem(where, "needs a template or a prompt")
        return None

    def find_template(self, name: str, key: str) -> Template | None:
        if name.endswith(".toml") or "/" in name or "\\" in name:
            name = str(self.base / Path(name).expanduser())
        try:
            return load_template(name, self.templates_dir)
        except UsageError as exc:
            self.problem(key, str(exc))
            return None

    def load_style(self, value: object, key: str) -> str | None:
        if value == "" or value is False:
            return None
        if isinstance(value, dict):
            text = value.get("text")
            if set(value) != {"text"} or not isinstance(text, str) or not text.strip():
                self.problem(key, 'an inline style is { text = "..." }')
                return None
            self.check_pattern(key, text)
            return text.strip()
        if not isinstance(value, str):
            self.problem(key, "must be a style preset name, a path or { text = ... }")
            return None
        template = self.find_template(value, key)
        if template is None:
            return None
        if template.kind != "style":
            self.problem(key, f"template {template.name!r} is not a style preset")
            return None
        return template.style

    def load_sizes(self, entry: Mapping[str, object], where: str) -> tuple[str, ...]:
        out: list[str] = []
        for index, spec in enumerate(self.str_list(entry, "sizes", where)):
            try:
                canonical = parse_size(spec).spec
            except ValueError as exc:
                self.problem(f"{_key(where, 'sizes')}[{index}]", str(exc))
                continue
            if canonical not in out:
                out.append(canonical)
        return tuple(out)

    # -- small checks

    def check_keys(self, entry: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
        for key in sorted(set(entry) - allowed):
            self.problem(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def check_pattern(self, key: str, pattern: str) -> None:
        try:
            pattern_fields(pattern)
        except ValueError as exc:
            self.problem(key, str(exc))

    def opt_str(self, data: Mapping[str, object], key: str, where: str = "") -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, str):
            return value
        self.problem(_key(where, key), "must be a string")
        return None

    def str_list(self, data: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(_key(where, key), "must be a list of strings")
            return ()
        return tuple(value)


def _key(where: str, key: str) -> str:
    return key if where in ("", "recipe") else f"{where}.{key}"
