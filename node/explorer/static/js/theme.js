// Dark mode: the system preference (prefers-color-scheme in explorer.css) unless the reader
// chose one with the toggle; the choice is kept in localStorage. Loaded in <head> so the
// page is painted in the right colours from the start.
(function () {
  "use strict";
  var KEY = "provledger-theme";
  var root = document.documentElement;
  function stored() { try { return localStorage.getItem(KEY); } catch (e) { return null; } }
  function current() {
    var t = root.getAttribute("data-theme");
    if (t) return t;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  var chosen = stored();
  if (chosen === "dark" || chosen === "light") root.setAttribute("data-theme", chosen);
  function label(button) {
    var dark = current() === "dark";
    button.setAttribute("aria-pressed", dark ? "true" : "false");
    button.textContent = dark ? "Light mode" : "Dark mode";
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    label(button);
    button.addEventListener("click", function () {
      var next = current() === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { localStorage.setItem(KEY, next); } catch (e) { /* private mode: not kept */ }
      label(button);
      document.dispatchEvent(new CustomEvent("themechange"));
    });
  });
})();
