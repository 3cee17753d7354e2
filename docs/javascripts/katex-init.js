// Render pymdownx.arithmatex output (generic mode) with the locally bundled KaTeX.
//
// arithmatex `generic: true` emits <span class="arithmatex">\( ... \)</span> for inline
// math and <div class="arithmatex">\[ ... \]</div> for display math. Each element is
// rendered in place with katex.render; auto-render is the fallback for anything else.
// Material's instant navigation swaps pages without a reload and announces each page on
// the `document$` observable, so we subscribe to it when it exists.
(function () {
  "use strict";

  function renderArithmatex(root) {
    if (typeof katex === "undefined") {
      return;
    }
    var nodes = root.querySelectorAll(".arithmatex");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var tex = (el.textContent || el.innerText || "").trim();
      var display;
      if (tex.startsWith("\\(") && tex.endsWith("\\)")) {
        display = false;
      } else if (tex.startsWith("\\[") && tex.endsWith("\\]")) {
        display = true;
      } else {
        continue; // already rendered, or not arithmatex output
      }
      katex.render(tex.slice(2, -2), el, {
        displayMode: display,
        throwOnError: false,
      });
    }
    if (typeof renderMathInElement !== "undefined") {
      renderMathInElement(root, {
        delimiters: [
          { left: "\\[", right: "\\]", display: true },
          { left: "\\(", right: "\\)", display: false },
        ],
        ignoredClasses: ["katex"],
        throwOnError: false,
      });
    }
  }

  function onPage() {
    renderArithmatex(document.body);
  }

  if (typeof document$ !== "undefined" && document$.subscribe) {
    document$.subscribe(onPage);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", onPage);
  } else {
    onPage();
  }
})();
