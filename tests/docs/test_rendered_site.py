"""The built documentation site: math rendered in a browser, no broken internal links.

`KERAS_NORMS_SITE_DIR` names the site that `mkdocs build` wrote in this run
(`scripts/test.sh` sets it; see `conftest.py`). The checks:

* links (no browser): every `href`/`src` on every built page that points inside
  the site (relative or root-relative) names an existing file, and every
  `#fragment` an `id` on the target page;
* the API page has an entry (an anchor) for every public class and function;
* math (headless Chromium, Debian `chromium`): on the Home page and a layer
  page, every arithmatex element was rendered by the bundled KaTeX, no raw TeX
  delimiters are left in the text, and no file the page loads is missing.
  Skipped, with the reason, only when no Chromium is installed
  (`scripts/install_chromium.sh` installs it; the test command runs it first).

Skips: "site not built in this run" (no `index.html` in the site folder) and
"Chromium not installed"; nothing else.
"""

import functools
import html.parser
import http.server
import os
import pathlib
import posixpath
import re
import shutil
import subprocess
import threading
import urllib.parse

import pytest

SITE_DIR = os.environ.get("KERAS_NORMS_SITE_DIR", "site")

# Pages rendered in the browser: pages that carry display and inline math.
# (The Home page has none since its table was rewritten, so it is not listed;
# its links are covered by test_no_broken_internal_links.)
RENDERED_PAGES = [
    "layers/batch_normalization/",
    "layers/filter_response_normalization/",
    "numerics/",
]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium opens background connections, which the closed
    # network of the test machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--virtual-time-budget=5000",  # let the page's scripts (KaTeX) run
]

LINK_ATTRIBUTES = {
    "a": ("href",),
    "area": ("href",),
    "link": ("href",),
    "script": ("src",),
    "img": ("src",),
    "iframe": ("src",),
    "source": ("src",),
    "audio": ("src",),
    "video": ("src", "poster"),
    "track": ("src",),
    "embed": ("src",),
}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "param"}

# Text that holds TeX on purpose, or code: not searched for raw math.
NOT_PROSE_TAGS = {"script", "style", "code", "pre", "textarea", "annotation", "math", "svg"}
NOT_PROSE_CLASSES = {"katex", "katex-display", "katex-mathml", "katex-html"}
RAW_MATH = [
    ("\\( ... \\) or \\[ ... \\] (arithmatex delimiters)", re.compile(r"\\[()\[\]]")),
    ("$$ ... $$", re.compile(r"\$\$")),
    ("$ ... $", re.compile(r"\$(?!\s)[^$\n]{1,200}?(?<!\s)\$")),
]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def site():
    root = pathlib.Path(SITE_DIR).resolve()
    if not (root / "index.html").is_file():
        pytest.skip(f"site not built in this run: no index.html in {root} (run `mkdocs build` first)")
    return root


def find_chromium():
    names = [os.environ.get("KERAS_NORMS_CHROMIUM")]
    names += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")]
    names.append("/usr/bin/chromium")
    return next((n for n in names if n and os.path.isfile(n) and os.access(n, os.X_OK)), None)


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "Chromium not installed and scripts/install_chromium.sh could not install it "
            "(see its message above); math rendering not checked. Install Debian `chromium` "
            "or set KERAS_NORMS_CHROMIUM to a Chromium binary."
        )
    return binary


class _Handler(http.server.SimpleHTTPRequestHandler):
    failed = None  # list of (path, status) of the requests answered with an error

    def log_request(self, code="-", size="-"):
        status = getattr(code, "value", code)
        if isinstance(status, int) and status >= 400 and self.path != "/favicon.ico":
            self.failed.append((self.path, status))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    """The site over http://127.0.0.1:<free port>/ (file:// may block scripts and fonts)."""
    failed = []
    handler = functools.partial(type("Handler", (_Handler,), {"failed": failed}), directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", failed
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------- parsing
class PageLinks(html.parser.HTMLParser):
    """The ids (and `<a name>`s) of a page and the links it makes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []  # (line, tag, attribute, value)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for attribute in LINK_ATTRIBUTES.get(tag, ()):
            if attrs.get(attribute) is not None:
                self.links.append((self.getpos()[0], tag, attribute, attrs[attribute]))

    handle_startendtag = handle_starttag


@functools.lru_cache(maxsize=None)
def _parse(path):
    parser = PageLinks()
    parser.feed(pathlib.Path(path).read_text(encoding="utf-8"))
    parser.close()
    return parser


def _target(site, page, link):
    """`(file, fragment, problem)` for an internal `link` on `page` (a path in the site); None if external."""
    parts = urllib.parse.urlsplit(link.strip())
    if parts.scheme or parts.netloc:
        return None  # http(s)://, //host, mailto:, data:, javascript:
    path = urllib.parse.unquote(parts.path)
    if path.startswith("/"):
        rel = posixpath.normpath(path.lstrip("/") or ".")
    elif path:
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(page), path))
    else:
        rel = page  # "#fragment" or "?query": this page
    if rel == ".." or rel.startswith("../"):
        return None, None, "points above the site root"
    target = site / rel
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return None, None, f"no file {target.relative_to(site)}"
    return target, urllib.parse.unquote(parts.fragment), None


def broken_links(site):
    """Every broken internal link of the site, as readable lines."""
    problems = []
    for file in sorted(site.rglob("*.html")):
        page = file.relative_to(site).as_posix()
        for line, tag, attribute, value in _parse(str(file)).links:
            resolved = _target(site, page, value)
            if resolved is None:
                continue
            target, fragment, problem = resolved
            if problem is None and fragment and target.suffix == ".html":
                if fragment not in _parse(str(target)).ids:
                    problem = f"no id {fragment!r} on {target.relative_to(site)}"
            if problem:
                problems.append(f"{page}:{line}: <{tag} {attribute}={value!r}>: {problem}")
    return problems


class RenderedMath(html.parser.HTMLParser):
    """The arithmatex elements of a rendered DOM, and its prose outside math and code."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []  # (tag, is_arithmatex, hides_prose)
        self.arithmatex = []  # dicts: rendered, error, text
        self.open_math = []  # indices into self.arithmatex of the open arithmatex elements
        self.prose = []

    def handle_starttag(self, tag, attrs):
        classes = set((dict(attrs).get("class") or "").split())
        is_arithmatex = "arithmatex" in classes
        if is_arithmatex:
            self.open_math.append(len(self.arithmatex))
            self.arithmatex.append({"rendered": False, "error": False, "text": []})
        for index in self.open_math:
            self.arithmatex[index]["rendered"] |= bool(classes & {"katex", "katex-display"})
            self.arithmatex[index]["error"] |= "katex-error" in classes
        if tag in VOID:
            return
        hides = tag in NOT_PROSE_TAGS or bool(classes & NOT_PROSE_CLASSES)
        self.stack.append((tag, is_arithmatex, hides))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        # Pop up to the matching open tag (the DOM serialization closes every element).
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                for _, is_arithmatex, _ in self.stack[depth:]:
                    if is_arithmatex:
                        self.open_math.pop()
                del self.stack[depth:]
                return

    def handle_data(self, data):
        for index in self.open_math:
            self.arithmatex[index]["text"].append(data)
        if not any(hides for _, _, hides in self.stack):
            self.prose.append(data)


def render(chromium, url, profile):
    """The DOM of `url` after its scripts ran, as Chromium serializes it."""
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Chromium did not finish rendering {url} within 180 s")
    if result.returncode != 0 or "</html>" not in result.stdout:
        errors = [l for l in result.stderr.splitlines() if "dbus" not in l.lower()]
        pytest.fail(
            f"Chromium failed on {url} (exit {result.returncode}, {len(result.stdout)} bytes of DOM):\n"
            + "\n".join(errors[-30:])
        )
    return result.stdout


# --------------------------------------------------------------------- tests
def test_no_broken_internal_links(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 5, f"only {len(pages)} pages in {site}"
    problems = broken_links(site)
    assert not problems, f"{len(problems)} broken internal links:\n" + "\n".join(problems[:60])


def test_api_page_shows_every_public_symbol(site):
    import inspect

    import keras_norms

    ids = _parse(str(site / "api" / "index.html")).ids
    expected = [
        f"keras_norms.{name}"
        for name in keras_norms.__all__
        if inspect.isclass(getattr(keras_norms, name)) or inspect.isfunction(getattr(keras_norms, name))
    ]
    expected += [f"keras_norms.ops.{name}" for name in keras_norms.ops.__all__]
    expected += [
        f"keras_norms.config.{name}"
        for name, obj in vars(keras_norms.config).items()
        if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == keras_norms.config.__name__
    ]
    missing = [name for name in expected if name not in ids]
    assert not missing, f"not on the built API page (api/index.html): {missing}"


@pytest.mark.parametrize("page", RENDERED_PAGES, ids=lambda p: p.strip("/") or "home")
def test_math_is_rendered_by_katex(site, server, chromium, page, tmp_path):
    base, failed = server
    static = (site / page / "index.html").read_text(encoding="utf-8")
    expected = len(re.findall(r'class="arithmatex"', static))
    assert expected > 0, f"{page or 'Home'}: no arithmatex math in the built page, nothing to check"

    del failed[:]
    dom = render(chromium, base + page, tmp_path / "profile")
    missing_files = sorted(set(failed))
    assert not missing_files, f"{page or 'Home'}: requests answered with an error: {missing_files}"

    parser = RenderedMath()
    parser.feed(dom)
    parser.close()
    math = parser.arithmatex
    assert len(math) == expected, f"{len(math)} arithmatex elements in the DOM, {expected} in the built page"
    not_rendered = ["".join(m["text"]).strip()[:80] for m in math if not m["rendered"]]
    assert not not_rendered, f"{len(not_rendered)} of {len(math)} formulas not rendered by KaTeX: {not_rendered[:10]}"
    errors = ["".join(m["text"]).strip()[:80] for m in math if m["error"]]
    assert not errors, f"KaTeX could not parse: {errors[:10]}"
    assert dom.count('class="katex"') >= len(math)

    prose = "".join(parser.prose)
    raw = [
        f"{what}: ...{prose[max(0, m.start() - 40):m.end() + 40]!r}..."
        for what, pattern in RAW_MATH
        for m in pattern.finditer(prose)
    ]
    assert not raw, f"{page or 'Home'}: raw TeX left in the text:\n" + "\n".join(raw[:20])
