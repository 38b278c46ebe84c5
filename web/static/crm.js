// Progressive enhancement of the CRM pages: every page works without this file.
(function () {
  "use strict";

  // Searchable pickers (Tom Select): static options, or records searched through the API as you type.
  function initPickers(root) {
    if (typeof window.TomSelect === "undefined") return;
    root.querySelectorAll("select[data-tom]").forEach(function (el) {
      if (el.tomselect) return;
      var remote = el.getAttribute("data-remote");
      var options = { maxOptions: 50, allowEmptyOption: true, plugins: el.multiple ? ["remove_button"] : [] };
      if (remote) {
        options.valueField = "id";
        options.labelField = "title";
        options.searchField = ["title"];
        options.loadThrottle = 250;
        options.load = function (query, callback) {
          if (!query) return callback();
          fetch(remote + "?limit=20&q=" + encodeURIComponent(query.slice(0, 100)), {
            headers: { "Accept": "application/json" }, credentials: "same-origin"
          }).then(function (r) { return r.ok ? r.json() : { items: [] }; })
            .then(function (data) {
              callback((data.items || []).map(function (i) {
                return { id: i.id, title: (i.number ? i.number + " · " : "") + i.title };
              }));
            }).catch(function () { callback(); });
        };
      }
      new window.TomSelect(el, options);
    });
  }

  // Bulk selection on lists: the action bar appears with the count of ticked rows.
  function initBulk(root) {
    var form = root.querySelector("#bulk-form");
    if (!form) return;
    var bar = form.querySelector("#bulk-bar");
    var count = form.querySelector("[data-bulk-count]");
    var action = form.querySelector("[data-bulk-action]");
    function refresh() {
      var n = form.querySelectorAll("input[name=ids]:checked").length;
      bar.classList.toggle("d-none", n === 0);
      if (count) count.textContent = n + " ✓";
    }
    function toggleInputs() {
      if (!action) return;
      form.querySelectorAll("[data-bulk-for]").forEach(function (el) {
        var show = el.getAttribute("data-bulk-for").split(" ").indexOf(action.value) >= 0;
        el.classList.toggle("d-none", !show);
        el.disabled = !show;
      });
    }
    form.addEventListener("change", function (e) {
      if (e.target.matches("[data-select-all]")) {
        form.querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = e.target.checked; });
      }
      if (e.target === action) toggleInputs();
      refresh();
    });
    toggleInputs();
    refresh();
  }

  // The "more filters" row: field + condition + value become one list parameter (field__op=value).
  function initAdvancedFilter(root) {
    var form = root.querySelector("#advanced-filter");
    if (!form) return;
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var field = form.querySelector("[data-adv-field]").value;
      var op = form.querySelector("[data-adv-op]").value;
      var value = form.querySelector("[data-adv-value]").value || (op === "empty" ? "1" : "");
      var params = new URLSearchParams(window.location.search);
      params.delete("after");
      params.delete("before");
      params.append(op ? field + "__" + op : field, value);
      window.location.search = params.toString();
    });
  }

  function init(root) {
    initPickers(root);
    initBulk(root);
    initAdvancedFilter(root);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (e) { init(e.target); });
})();
