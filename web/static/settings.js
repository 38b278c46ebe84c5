// The CRM configuration pages: a number format's live preview, and the options box shown only for
// choice fields. Both pages work without this file (the preview then shows after saving).
(function () {
  "use strict";

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      var args = arguments;
      clearTimeout(timer);
      timer = setTimeout(function () { fn.apply(null, args); }, ms);
    };
  }

  document.querySelectorAll("form.number-format").forEach(function (form) {
    var input = form.querySelector("input[name=pattern]");
    var output = form.querySelector(".number-preview");
    if (!input || !output) { return; }
    var hint = document.createElement("div");
    hint.className = "invalid-feedback";
    input.insertAdjacentElement("afterend", hint);
    var refresh = debounce(function () {
      var url = form.dataset.previewUrl + "&pattern=" + encodeURIComponent(input.value);
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          input.classList.toggle("is-invalid", !data.ok);
          hint.textContent = data.ok ? "" : (data.hint || data.error);
          output.textContent = data.ok ? data.preview : "—";
        })
        .catch(function () { /* offline or signed out: the preview just stays */ });
    }, 250);
    input.addEventListener("input", refresh);
  });

  var type = document.getElementById("type");
  var options = document.querySelector(".field-options");
  if (type && options) {
    var sync = function () {
      var choice = type.value === "choice" || type.value === "multi";
      var box = options.querySelector("textarea");
      options.hidden = !choice && !(box && box.value.trim());
    };
    type.addEventListener("change", sync);
    sync();
  }
})();
