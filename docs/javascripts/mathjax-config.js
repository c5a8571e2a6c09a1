// MathJax 3 for pymdownx.arithmatex (generic mode): typeset only what arithmatex marked.
// The bundle (tex-chtml-full.js and its fonts) ships in docs/javascripts/mathjax/, so pages render offline.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
