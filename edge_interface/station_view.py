"""A station's configuration as readable cards, driven by its JSON Schema (titles, descriptions, variants).

Nothing here knows the station's fields by name: a new camera kind, rule or sink is described by its own
schema, so it shows up readably without touching the dashboard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edge_interface.charts import fmt

# Field-name suffixes that are units: shown with the value ("2 s"), not in the label ("Capture timeout").
_UNITS = {"_s": "s", "_ms": "ms", "_us": "µs", "_mb": "MiB", "_days": "days", "_pct": "%"}
_WORDS = {"id": "ID", "fps": "FPS", "roi": "ROI", "url": "URL", "jpeg": "JPEG", "ok": "OK", "api": "API"}
_SECRET = re.compile(r"(?i)password|secret|token|api_key")
_URL_CREDENTIALS = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://)([^/@:]+):([^/@]*)@")
_HIDDEN = "hidden"


@dataclass(frozen=True)
class FieldView:
    label: str
    help: str = ""
    value: str | None = None  # a scalar, formatted; None when the field is a card or a list of cards
    unset: bool = False  # no value: shown muted, the help says what that means
    card: CardView | None = None
    cards: list[CardView] = field(default_factory=list)


@dataclass(frozen=True)
class CardView:
    title: str
    kind: str | None = None  # the variant (camera kind, rule type), readable
    help: str = ""
    fields: list[FieldView] = field(default_factory=list)


def humanize(name: str) -> tuple[str, str]:
    """A field name as a label, and the unit its suffix names: capture_timeout_s → ("Capture timeout", "s")."""
    unit = ""
    for suffix, symbol in _UNITS.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            name, unit = name[: -len(suffix)], symbol
            break
    words = [_WORDS.get(w, w) for w in name.split("_") if w]
    if not words:
        return name, unit
    first = words[0] if words[0].isupper() else words[0].capitalize()
    return " ".join([first, *words[1:]]), unit


class _Schema:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(self, node: dict[str, Any], value: Any) -> dict[str, Any]:
        """The schema that describes `value`: follows $ref, picks the variant by `type`, skips the null branch."""
        for _ in range(16):  # bounded: a malformed schema must not hang a page
            # The target's own description wins: it describes the variant (this rule, this camera kind),
            # while the referring field's description is shown beside the field by the caller.
            if "$ref" in node:
                node = self.defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
                continue
            options = node.get("oneOf") or node.get("anyOf")
            if not options:
                return node
            node = self._choose(node, options, value)
        return node

    def _choose(self, node: dict[str, Any], options: list[dict[str, Any]], value: Any) -> dict[str, Any]:
        mapping = (node.get("discriminator") or {}).get("mapping") or {}
        if isinstance(value, dict) and str(value.get("type")) in mapping:
            return {"$ref": mapping[str(value["type"])]}
        non_null = [o for o in options if o.get("type") != "null"]
        if isinstance(value, dict):
            for option in non_null:
                props = self.resolve(option, None).get("properties", {})
                if props.get("type", {}).get("const") == value.get("type"):
                    return option
        return non_null[0] if non_null and value is not None else (options[0] if options else {})


def _scalar(value: Any, unit: str, secret: bool) -> str:
    if secret:
        return _HIDDEN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return fmt(float(value), unit)
    if isinstance(value, list):
        return ", ".join(_scalar(v, "", False) for v in value) if value else "none"
    text = str(value)
    # Camera URLs may carry credentials (rtsp://user:pass@host): never put them on a screen.
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)


def _is_object_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _card(
    schema: _Schema, node: dict[str, Any], value: dict[str, Any], title: str, skip: tuple[str, ...] = ()
) -> CardView:
    node = schema.resolve(node, value)
    properties: dict[str, Any] = node.get("properties", {})
    kind, help_text = None, ""
    if "type" in value and "type" in properties:
        # A variant (camera kind, rule type): say which, and what that kind does.
        kind = humanize(str(value["type"]))[0].lower()
        help_text = str(node.get("description") or properties["type"].get("description") or "")
    fields = []
    for name in [*properties, *(k for k in value if k not in properties)]:
        if name not in value or name in skip or (name == "type" and kind is not None):
            continue
        if name == "name" and value[name] is None:
            continue  # an unnamed rule is named by its kind, already shown
        fields.append(_field(schema, properties.get(name, {}), name, value[name]))
    return CardView(title=title, kind=kind, help=help_text, fields=fields)


def _item_title(label: str, item: dict[str, Any], index: int) -> tuple[str, tuple[str, ...]]:
    """A list item's title (`Camera top`, a rule's name), and the field it came from (not repeated below)."""
    singular = label[:-1] if label.endswith("s") and len(label) > 3 else label
    if item.get("name"):
        return str(item["name"]), ("name",)
    if item.get("id"):
        return f"{singular} {item['id']}", ("id",)
    return f"{singular} {index + 1}", ()


def _field(schema: _Schema, node: dict[str, Any], name: str, value: Any) -> FieldView:
    label, unit = humanize(name)
    resolved = schema.resolve(node, value)
    help_text = str(node.get("description") or resolved.get("description") or "")
    if isinstance(value, dict):
        return FieldView(label=label, help=help_text, card=_card(schema, node, value, label))
    if _is_object_list(value):
        items = resolved.get("items", {})
        cards = [_card(schema, items, v, *_item_title(label, v, i)) for i, v in enumerate(value)]
        return FieldView(label=label, help=help_text, cards=cards)
    if value is None:
        return FieldView(label=label, help=help_text, value="not set", unset=True)
    secret = bool(_SECRET.search(name)) or resolved.get("format") == "password"
    return FieldView(label=label, help=help_text, value=_scalar(value, unit, secret))


def station_view(station: dict[str, Any], schema: dict[str, Any]) -> CardView:
    """The whole station: its name and description as the heading, every other field as rows and cards."""
    card = _card(_Schema(schema), schema, station, str(station.get("name") or station.get("id") or "Station"))
    shown = [f for f in card.fields if f.label not in ("Name", "Description")]
    return CardView(
        title=card.title,
        kind=None,
        help=str(station.get("description") or "").strip() or card.help,
        fields=shown,
    )
