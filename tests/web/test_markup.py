"""The page tests' HTML reader (tests/markup.py) finds what a browser would: a page test built on
it fails when the markup it looks for is missing, never passes by not looking."""

import pytest

from tests.markup import parse

PAGE = """<section id="s"><table><tr data-guest="a" class="row odd"><td>a <b>one</b></td>
<td><input name="cpu" value=""><br></td></tr><tr data-guest="b"><td>two</td></tr></table>
<svg><g class="mark mark-policy"><line x1="12.5" /><text>policy</text></g></svg>
<dl><dt>CPUs</dt><dd>8 online</dd></dl></section><p>after</p>"""


def test_elements_are_found_by_tag_and_attributes_in_document_order() -> None:
    page = parse(PAGE)

    assert [row.get("data-guest") for row in page.find_all("tr", data_guest=True)] == ["a", "b"]
    assert page.find("tr", class_="odd").text == "a one"
    assert page.find("input", name="cpu").get("value") == ""
    assert page.find("g", class_="mark-policy").find("line").get("x1") == "12.5"
    assert page.find("section", id="s").definition("CPUs").text == "8 online"
    # Void and self-closed elements close themselves: what follows is not inside them.
    assert page.find("p").text == "after" and not page.find("svg").has("p")


def test_what_is_not_there_fails_the_test() -> None:
    page = parse(PAGE)

    assert page.find_all("tr", data_guest="c") == [] and not page.has("tr", class_="ro")
    with pytest.raises(AssertionError, match="no <tr>"):
        page.find("tr", data_guest="c")
    with pytest.raises(AssertionError, match="no <dt>GPUs</dt>"):
        page.definition("GPUs")
