"""Student-influenced text made safe for where it goes: a terminal line
(no control characters, no terminal escape sequences) or a spreadsheet cell
(no formula). Feedback HTML is sanitised in autograder/report.py."""
from __future__ import annotations

import re

# ESC-introduced sequences: CSI (ESC [ ... final byte), OSC/DCS/SOS/PM/APC
# strings (ESC ] ... BEL or ESC \), and two-byte escapes (ESC + one char);
# the 8-bit forms (CSI = \x9b, OSC = \x9d, ...) are C1 controls, dropped below.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"                # CSI
    r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"       # OSC, DCS, SOS, PM, APC strings
    r"|\x9b[0-?]*[ -/]*[@-~]?"                 # 8-bit CSI
    r"|[\x90\x98\x9d-\x9f].*?(?:\x07|\x9c|\x1b\\|$)"  # 8-bit string controls
    r"|\x1b[ -~]?",                            # any other escape
    re.S)
_SPACES = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
# C0 and C1 controls, DEL, and the Unicode bidirectional overrides and
# isolates, which reorder what a terminal shows ("Trojan Source").
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain_text(s, limit: int | None = None) -> str:
    """``s`` as one printable line: escape sequences and control characters
    removed, line breaks and tabs turned into a space, cut to ``limit``
    characters (ending in "...") when given."""
    text = "" if s is None else str(s)
    text = _ESCAPES.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _CONTROLS.sub("", text)
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 3, 0)] + "..." if limit >= 3 else text[:limit]
    return text


_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A value for a CSV cell that a spreadsheet shows as text: a string that
    starts like a formula (``=``, ``+``, ``-``, ``@``, tab, CR; also after
    leading spaces) gets a leading ``'`` (OWASP's CSV injection advice);
    plain numbers such as ``-3`` stay numbers. Non-strings pass through."""
    if not isinstance(value, str):
        return value
    text = _ESCAPES.sub("", value)
    text = _CONTROLS.sub(lambda m: m.group(0) if m.group(0) in "\t\n\r" else "", text)
    stripped = text.lstrip(" \t\r\n")
    risky = text[:1] in _FORMULA_START or stripped[:1] in _FORMULA_START
    if text and risky and not _NUMBER.match(text.strip()):
        return "'" + text
    return text


# ---------------------------------------------------------------- HTML
#
# Notebook HTML shown to students (feedback pages) and to instructors
# (nbgrader's Formgrader, configured in nbgrader_config.py) contains what a
# student wrote and what their code printed. nbconvert's own sanitising
# (HTMLExporter.sanitize_html) covers outputs but not markdown cells in
# nbgrader's templates, escapes ordinary tags such as <p> and <th>, and lets
# markdown links like [x](javascript:...) through; these replace it.

# A page that runs nothing and loads nothing: inline styles and data: images
# and fonts only. Feedback pages carry it in their <head>.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'

_TAGS = frozenset("""a abbr acronym b blockquote br caption code col colgroup dd del details div dl dt
    em figcaption figure h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre q s samp small span strong
    sub summary sup table tbody td tfoot th thead tr tt u ul var""".split())
_URL_ATTRS = {"a": ("href",), "img": ("src",)}
_PLAIN_ATTRS = {"*": ("id", "title", "align"), "a": ("name",), "img": ("alt", "width", "height"),
                "td": ("colspan", "rowspan"), "th": ("colspan", "rowspan", "scope"), "ol": ("start",)}
# Classes the markdown renderer and pygments use (short token classes,
# anchor links, tables); no page-layout classes (the page's CSS could pin
# an element over the grade banner).
_CLASS = re.compile(r"^(?:[a-z][a-z0-9]{0,2}|highlight|anchor-link|dataframe|language-[\w+-]{1,30}|"
                    r"math|hl-[a-z]+)$")
_IMAGE_DATA = re.compile(r"^data:image/(?:png|jpeg|gif|webp|svg\+xml);base64,", re.I)
_SIZE = re.compile(r"^\d{1,5}(?:px|%)?$")


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if name == "class":
        return all(_CLASS.match(token) for token in value.split())
    if name in ("width", "height"):
        return bool(_SIZE.match(value.strip()))
    if name in _URL_ATTRS.get(tag, ()):
        v = value.strip()
        if v.lower().startswith("data:"):
            return tag == "img" and bool(_IMAGE_DATA.match(v))
        return True  # bleach checks the protocol (http, https, mailto) or takes a relative link
    return name in _PLAIN_ATTRS.get(tag, ()) or name in _PLAIN_ATTRS["*"]


def clean_html(html) -> str:
    """Untrusted HTML reduced to formatting: no scripts, event handlers,
    styles, frames, forms or ``javascript:`` links (bleach; what is not
    allowed is shown escaped, as text)."""
    import bleach

    text = html.decode() if isinstance(html, bytes) else str(html)
    return bleach.clean(text, tags=_TAGS, attributes=_allowed_attribute,
                        protocols={"http", "https", "mailto", "data"}, strip=False, strip_comments=True)


def _markdown_filter():
    from jinja2 import pass_context

    @pass_context
    def markdown2html(context, source):
        """nbconvert's markdown rendering (math, attachments), then ``clean_html``."""
        from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

        cell = context.get("cell", {}) or {}
        renderer = IPythonRenderer(escape=False, attachments=cell.get("attachments", {}) or {},
                                   embed_images=False, path="", anchor_link_text="¶",
                                   exclude_anchor_links=False)
        return clean_html(MarkdownWithMath(renderer=renderer).render(source))
    return markdown2html


markdown2html = _markdown_filter()

_FILES_URL = re.compile(r'(src|href)\=([\'"]?)/?files/')


def strip_files_prefix(text: str) -> str:
    """nbconvert's filter without its markdown-link pattern, which takes time
    quadratic in the number of ``[`` (a 60 KB markdown cell of them took 36 s
    to render); in HTML only the src/href form matters."""
    return _FILES_URL.sub(r"\1=\2", text)


# Filters for nbconvert's HTMLExporter (``HTMLExporter.filters``).
HTML_FILTERS = {"markdown2html": "autograder.sanitize.markdown2html",
                "clean_html": "autograder.sanitize.clean_html",
                "strip_files_prefix": "autograder.sanitize.strip_files_prefix"}

_OUTPUT_TYPES = {"text/plain", "text/html", "text/markdown", "text/latex",
                 "image/png", "image/jpeg", "image/svg+xml"}
_TAG = re.compile(r"^[\w-]{1,64}$")
_GRADE_ID = re.compile(r"[^\w-]")


def untrusted_outputs(nb, resources):
    """An nbconvert preprocessor (a callable) for notebooks a student's code
    produced: outputs keep only mimetypes the templates render safely
    (no JavaScript, widgets, PDFs), output metadata only numeric image
    sizes (the templates put width/height in unquoted attributes), cell
    tags and grade ids only word characters."""
    import nbformat

    for cell in nb.cells:
        meta = cell.get("metadata", {})
        if "tags" in meta:
            meta["tags"] = [t for t in meta.get("tags") or [] if isinstance(t, str) and _TAG.match(t)]
        grader = meta.get("nbgrader")
        if isinstance(grader, dict) and isinstance(grader.get("grade_id"), str):
            grader["grade_id"] = _GRADE_ID.sub("_", grader["grade_id"])[:200]
        if cell.get("cell_type") != "code":
            continue
        clean = []
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                clean.append(nbformat.v4.new_output("stream", name=out.get("name", "stdout")
                                                    if out.get("name") in ("stdout", "stderr") else "stdout",
                                                    text=_text(out.get("text", ""))))
            elif kind == "error":
                clean.append(nbformat.v4.new_output("error", ename=_text(out.get("ename", "")),
                                                    evalue=_text(out.get("evalue", "")),
                                                    traceback=[_text(t) for t in out.get("traceback", [])]))
            elif kind in ("display_data", "execute_result"):
                data = {k: _text(v) for k, v in (out.get("data") or {}).items() if k in _OUTPUT_TYPES}
                metadata = {}
                for k, v in (out.get("metadata") or {}).items():
                    if k in _OUTPUT_TYPES and isinstance(v, dict):
                        sizes = {n: int(v[n]) for n in ("width", "height")
                                 if isinstance(v.get(n), (int, float)) and not isinstance(v.get(n), bool)
                                 and 0 < v[n] < 100000}
                        if sizes:
                            metadata[k] = sizes
                new = nbformat.v4.new_output(kind, data=data, metadata=metadata)
                if kind == "execute_result":
                    count = out.get("execution_count")
                    new["execution_count"] = count if isinstance(count, int) else None
                clean.append(new)
        cell["outputs"] = clean
    return nb, resources


def _text(value) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else str(value)


_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)


def lock_page(html: str) -> str:
    """A complete HTML page made inert: the Content-Security-Policy meta as
    the first thing in <head> (before anything it governs), and no <script>
    elements (the template's MathJax loader included: nothing may load)."""
    html = _SCRIPT.sub("", html)
    html, n = re.subn(r"(<head\b[^>]*>)", lambda m: m.group(1) + "\n" + CSP_META, html, count=1, flags=re.I)
    if not n:
        html = f"<!DOCTYPE html>\n<html><head>{CSP_META}</head>" + html + "</html>"
    return html
