// Starts Swagger UI (/docs) or ReDoc (/redoc) on the node's own OpenAPI document, with the
// files the node serves itself: the documentation works with no internet.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("docs");
    var spec = el.getAttribute("data-spec");
    if (el.getAttribute("data-ui") === "swagger") {
      window.SwaggerUIBundle({ url: spec, domNode: el, deepLinking: true, validatorUrl: null });
    } else {
      // ReDoc 2.5.2 draws its "API docs by Redocly" logo from its CDN: point that image at
      // the node's own icon so that no request leaves the machine.
      var own = "/explorer/static/icon.svg";
      var remote = function (value) { return String(value).indexOf("https://cdn.redoc.ly/") === 0; };
      var setAttribute = Element.prototype.setAttribute;
      Element.prototype.setAttribute = function (name, value) {
        return setAttribute.call(this, name, this.tagName === "IMG" && name === "src" && remote(value) ? own : value);
      };
      var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
      Object.defineProperty(HTMLImageElement.prototype, "src", {
        configurable: true, enumerable: src.enumerable, get: src.get,
        set: function (value) { src.set.call(this, remote(value) ? own : value); }
      });
      // Search runs in a worker made from a blob: URL, which the page's CSP does not allow.
      window.Redoc.init(spec, { disableSearch: true, hideDownloadButton: false }, el);
    }
  });
})();
