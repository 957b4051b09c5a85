"""Narrative XHTML (R4 §2.4 Narrative, invariants txt-1 and txt-2).

txt-1: the div is well-formed XHTML, a single ``div`` in the XHTML namespace holding only the basic formatting
elements and attributes of HTML 4 (chapters 7-11, less 9.4, and 15), links, images and inline styles: no scripts,
forms, frames, objects, head/body, base/link/meta/style, no event-handler attributes, no ``javascript:`` URLs.
txt-2: it has some non-whitespace content.

A narrative is shown to clinicians by whatever viewer reads the record, so this is an allow-list, not a filter.
The parser is lxml's with everything that reaches outside the string turned off (no entity expansion, no DTD, no
network, no huge trees), and a DOCTYPE or processing instruction is refused outright, so neither XXE nor an entity
expansion bomb can happen: the only entities left are XML's five predefined ones and character references.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

XHTML = "http://www.w3.org/1999/xhtml"


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_ELEMENTS = _names(
    "p br div h1 h2 h3 h4 h5 h6 a span b em i strong small big tt dfn q var abbr acronym cite blockquote hr "
    "address bdo kbd sub sup ul ol li dl dt dd pre table caption colgroup col thead tr tfoot tbody th td code "
    "samp img map area"
)
_GLOBAL_ATTRIBUTES = _names("id class style title lang dir accesskey tabindex") | {_XML_LANG}
_CELL = _names("align valign char charoff")
_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": _names("href name rel rev charset hreflang type shape coords"),
    "img": _names("src alt longdesc height width usemap ismap align border hspace vspace"),
    "area": _names("href shape coords alt nohref"),
    "map": frozenset({"name"}),
    "table": _names("summary width border frame rules cellspacing cellpadding align bgcolor"),
    "col": _CELL | {"span", "width"},
    "colgroup": _CELL | {"span", "width"},
    "thead": _CELL,
    "tbody": _CELL,
    "tfoot": _CELL,
    "tr": _CELL | {"bgcolor"},
    "td": _CELL | _names("abbr axis headers scope rowspan colspan width height nowrap bgcolor"),
    "th": _CELL | _names("abbr axis headers scope rowspan colspan width height nowrap bgcolor"),
    "ol": frozenset({"start", "type", "compact"}),
    "ul": frozenset({"type", "compact"}),
    "li": frozenset({"type", "value"}),
    "blockquote": frozenset({"cite"}),
    "q": frozenset({"cite"}),
    "pre": frozenset({"width"}),
    "br": frozenset({"clear"}),
    "hr": frozenset({"align", "noshade", "size", "width"}),
    **{name: frozenset({"align"}) for name in ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "caption")},
}
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap"})
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel", "urn"})
# Browsers ignore whitespace and control characters inside a scheme ("java\tscript:"): compare without them.
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f]+")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_UNSAFE_STYLE = re.compile(r"expression\s*\(|javascript:|vbscript:|@import|behavior\s*:|-moz-binding", re.IGNORECASE)

_local = threading.local()


def _parser() -> etree.XMLParser:
    """This thread's parser: lxml parser objects must not be shared between threads (requests run in a pool)."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            load_dtd=False,
            dtd_validation=False,
            remove_comments=False,
            remove_pis=False,
        )
    return parser


def narrative_problems(div: str) -> list[tuple[str, str]]:
    """(invariant, reason) for each way ``div`` breaks txt-1 / txt-2; empty when it is a valid narrative."""
    if not div.lstrip().startswith("<div"):
        # Also refuses an XML declaration, a DOCTYPE (and so every entity declaration) and leading PIs.
        return [("txt-1", "the narrative must be one <div> element (no XML declaration, DOCTYPE or text around it)")]
    try:
        root = etree.fromstring(div, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        return [("txt-1", f"the narrative is not well-formed XHTML: {str(exc)[:120]}")]
    if root.tag != f"{{{XHTML}}}div":
        return [("txt-1", f'the root element must be <div xmlns="{XHTML}">')]
    problems: list[tuple[str, str]] = []
    for node in root.iter():
        reason = _node_problem(node)
        if reason is not None:
            problems.append(("txt-1", reason))
            if len(problems) >= 5:
                break
    if not problems and not _has_content(root):
        problems.append(("txt-2", "the narrative has no non-whitespace content"))
    return problems


def _node_problem(node: etree._Element) -> str | None:
    if isinstance(node, etree._Comment):
        return None
    if isinstance(node, etree._ProcessingInstruction):
        return "processing instructions are not allowed in a narrative"
    if isinstance(node, etree._Entity):
        return f"entity '&{node.name};' is not allowed: use a character reference"
    if not isinstance(node.tag, str) or not node.tag.startswith(f"{{{XHTML}}}"):
        return f"element '{str(node.tag)[:80]}' is not in the XHTML namespace"
    name = node.tag[len(XHTML) + 2 :]
    if name not in _ELEMENTS:
        return f"<{name[:40]}> is not allowed in a narrative"
    allowed = _ATTRIBUTES.get(name, frozenset())
    for attribute, value in node.attrib.items():
        if attribute not in _GLOBAL_ATTRIBUTES and attribute not in allowed:
            return f"attribute '{attribute[:60]}' is not allowed on <{name}>"
        if attribute in _URL_ATTRIBUTES and not _safe_url(value, image=name == "img" and attribute == "src"):
            return f"<{name} {attribute}> has a URL scheme that is not allowed"
        if attribute == "style" and _UNSAFE_STYLE.search(_IGNORED_IN_URL.sub("", value)):
            return f"<{name} style> holds script or an import"
    return None


def _safe_url(value: str, *, image: bool) -> bool:
    compact = _IGNORED_IN_URL.sub("", value).lower()
    scheme = _SCHEME.match(compact)
    if scheme is None:
        return True  # relative, #fragment or path: no scheme to run
    if scheme.group(1) == "data":
        return image and compact.startswith("data:image/") and not compact.startswith("data:image/svg")
    return scheme.group(1) in _SAFE_SCHEMES


def _has_content(root: etree._Element) -> bool:
    # Text of elements and the text after any node (a comment's own text is not content); an image is content.
    for node in root.iter():
        if isinstance(node.tag, str) and node.text and node.text.strip():
            return True
        if node is not root and node.tail and node.tail.strip():
            return True
    return root.find(f".//{{{XHTML}}}img") is not None
