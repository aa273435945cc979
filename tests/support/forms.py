"""The forms of an HTML page (a provider's login and consent pages), for tests that fill them in."""

from __future__ import annotations

from html.parser import HTMLParser


class Forms(HTMLParser):
    """The page's forms: action, hidden fields, submit buttons (name, value) and text inputs."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attributes.get("action"), "hidden": {}, "buttons": [], "inputs": []})
        elif tag == "input" and self.forms:
            if attributes.get("type") == "hidden":
                self.forms[-1]["hidden"][attributes["name"]] = attributes.get("value") or ""
            else:
                self.forms[-1]["inputs"].append(attributes.get("name"))
        elif tag == "button" and self.forms and attributes.get("name"):
            self.forms[-1]["buttons"].append((attributes["name"], attributes.get("value")))
