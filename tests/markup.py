"""Pages as element trees for tests: find elements by tag and attributes (data- ones above all)
and read their text, with the standard library's HTML parser instead of regexes over markup."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from itertools import pairwise

# Elements that never have an end tag.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass
class Element:
    """One element: its tag, attributes (an attribute without a value is ""), and content."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """The attribute's value; None when the element has no such attribute."""
        return self.attrs.get(name)

    @property
    def text(self) -> str:
        """The text inside, with each run of white space made one space."""
        return re.sub(r"\s+", " ", "".join(self._strings())).strip()

    def _strings(self):
        for child in self.children:
            if isinstance(child, str):
                yield child
            else:
                yield from child._strings()

    def _matches(self, tag: str | None, attrs: dict[str, str | bool]) -> bool:
        if tag is not None and self.tag != tag:
            return False
        for name, wanted in attrs.items():
            have = self.attrs.get(name)
            if wanted is True:
                if have is None:
                    return False
            elif name == "class":
                if wanted not in (have or "").split():
                    return False
            elif have != wanted:
                return False
        return True

    def find_all(self, tag: str | None = None, **attrs: str | bool) -> list[Element]:
        """Every element below, in document order, with this tag (any when None) and these
        attributes: `data_host="alpha"` is data-host="alpha", True asks only that it be there,
        and `class_` holds one of the element's classes."""
        wanted = {name.rstrip("_").replace("_", "-"): value for name, value in attrs.items()}
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if child._matches(tag, wanted):
                    found.append(child)
                found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str | bool) -> Element:
        """The first element below with this tag and attributes; fails the test when none."""
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'}> with {attrs} in <{self.tag}>"
        return found[0]

    def definition(self, term: str) -> Element:
        """The <dd> that follows the <dt> with this text, first in the document; fails the test
        when none."""
        for element in [self, *self.find_all()]:
            elements = [child for child in element.children if isinstance(child, Element)]
            for dt, dd in pairwise(elements):
                if (dt.tag, dd.tag, dt.text) == ("dt", "dd", term):
                    return dd
        raise AssertionError(f"no <dt>{term}</dt> followed by a <dd> in <{self.tag}>")

    def has(self, tag: str | None = None, **attrs: str | bool) -> bool:
        """Whether any element below has this tag and these attributes."""
        return bool(self.find_all(tag, **attrs))


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        # An end tag closes its element and any left open inside it; a stray one is ignored.
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Element:
    """The page or fragment as a tree under one element, "document"."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def field_error(html: str, field: str) -> str | None:
    """The error a form shows next to the field; None when there is none."""
    found = parse(html).find_all(class_="field-error", data_field=field)
    return found[0].text if found else None


def options(html: str, name: str) -> list[str]:
    """The option values of the select with this name."""
    return [
        option.get("value") for option in parse(html).find("select", name=name).find_all("option")
    ]


def selected(html: str, name: str) -> str | None:
    """The value chosen in the select with this name; None when none is."""
    chosen = parse(html).find("select", name=name).find_all("option", selected=True)
    return chosen[0].get("value") if chosen else None
