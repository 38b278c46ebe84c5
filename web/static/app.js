/* Courtyard's shell: keyboard shortcuts, toasts that fade, Tom Select on marked selects, live hints.
   Everything here is an enhancement: each page works as plain HTML forms and links without it. */
(function () {
  "use strict";

  function typing(target) {
    if (!target) return false;
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  // "/" focuses the global search, "n" follows the page's "new" link (data-shortcut="n").
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "/") {
      var search = document.getElementById("global-search-input") || document.querySelector("input[type=search]");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
    } else if (event.key === "n" || event.key === "N") {
      var link = document.querySelector("[data-shortcut=n]");
      if (link) { event.preventDefault(); link.click(); }
    }
  });

  function enhance(root) {
    // Searchable selects (Tom Select) where a macro asked for them.
    if (window.TomSelect) {
      root.querySelectorAll("select[data-tom-select]:not(.tomselected)").forEach(function (el) {
        var options = {
          maxOptions: 500, allowEmptyOption: true,
          render: {
            option: function (data, escape) {
              return '<div style="padding-left:' + (Number(data.depth) || 0) * 1.25 + 'rem">' + escape(data.text) + "</div>";
            }
          }
        };
        if (el.multiple) options.plugins = ["remove_button"];
        new window.TomSelect(el, options);
      });
    }
    // The workspace address field shows the resulting URL as it is typed.
    root.querySelectorAll("[data-address-preview]").forEach(function (input) {
      var out = document.getElementById(input.getAttribute("data-address-preview"));
      if (!out) return;
      var template = out.getAttribute("data-template");
      var update = function () {
        var value = input.value.trim().toLowerCase();
        if (!/^[a-z0-9-]{1,40}$/.test(value)) value = out.getAttribute("data-placeholder");
        out.textContent = template.replace("SLUG", value);
      };
      input.addEventListener("input", update);
      update();
    });
    // Confirm destructive buttons (data-confirm="…") before their form is sent.
    root.querySelectorAll("[data-confirm]").forEach(function (el) {
      if (el.dataset.confirmBound) return;
      el.dataset.confirmBound = "1";
      el.addEventListener("click", function (event) {
        if (!window.confirm(el.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function fadeToasts() {
    document.querySelectorAll("#toasts .toast[data-autohide=true]").forEach(function (toast) {
      window.setTimeout(function () { toast.classList.remove("show"); toast.remove(); }, 6000);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); fadeToasts(); });
  document.addEventListener("htmx:load", function (event) { enhance(event.target); });
})();
