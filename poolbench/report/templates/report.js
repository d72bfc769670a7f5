// Sorting and filtering of report.html; the page is complete without it.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  form.hidden = false;

  function key(cell) {
    var text = cell ? cell.getAttribute("data-sort") : "";
    var number = parseFloat(text);
    return { empty: text === "", number: isNaN(number) ? null : number, text: text };
  }

  function compare(a, b) {
    if (a.empty !== b.empty) { return a.empty ? 1 : -1; }
    if (a.number !== null && b.number !== null) { return a.number - b.number; }
    if (a.number !== null) { return -1; }
    if (b.number !== null) { return 1; }
    return a.text.localeCompare(b.text);
  }

  function sortTable(table, column, direction) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, i) { row.setAttribute("data-order", i); });
    rows.sort(function (r, s) {
      var a = key(r.cells[column]), b = key(s.cells[column]);
      if (a.empty || b.empty) { return compare(a, b); }
      var c = compare(a, b) * (direction === "descending" ? -1 : 1);
      return c || (r.getAttribute("data-order") - s.getAttribute("data-order"));
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === column) { th.setAttribute("aria-sort", direction); } else { th.removeAttribute("aria-sort"); }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      var button = document.createElement("button");
      button.type = "button";
      while (th.firstChild) { button.appendChild(th.firstChild); }
      th.appendChild(button);
      button.addEventListener("click", function () {
        var next = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        sortTable(table, column, next);
      });
    });
  });

  function selected() {
    var out = {};
    Array.prototype.forEach.call(form.querySelectorAll("select"), function (s) { out[s.name] = s.value; });
    return out;
  }

  function contains(element, attribute, value) {
    var have = element.getAttribute(attribute);
    return !value || have === null || have.split(" ").indexOf(value) >= 0;
  }

  function apply() {
    var f = selected();
    Array.prototype.forEach.call(document.querySelectorAll("section[data-suite]"), function (s) {
      s.classList.toggle("filtered", !contains(s, "data-suite", f.suite));
    });
    Array.prototype.forEach.call(document.querySelectorAll(".group"), function (g) {
      g.classList.toggle("filtered", !(contains(g, "data-dataset", f.dataset) && contains(g, "data-backbone", f.backbone)));
    });
    Array.prototype.forEach.call(document.querySelectorAll("table[data-pools-in] [data-pool]"), function (e) {
      e.classList.toggle("filtered", !!f.pool && e.getAttribute("data-pool") !== f.pool);
    });
    var hash = Object.keys(f).filter(function (k) { return f[k]; })
      .map(function (k) { return k + "=" + encodeURIComponent(f[k]); }).join("&");
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", hash ? "#" + hash : window.location.pathname);
    }
  }

  form.addEventListener("change", apply);
  // filters from the URL fragment: report.html#pool=lift&dataset=shapes
  var wanted = {};
  window.location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    var kv = part.split("=");
    if (kv.length === 2) { wanted[kv[0]] = decodeURIComponent(kv[1]); }
  });
  Array.prototype.forEach.call(form.querySelectorAll("select"), function (s) {
    if (wanted[s.name] && Array.prototype.some.call(s.options, function (o) { return o.value === wanted[s.name]; })) {
      s.value = wanted[s.name];
    }
  });
  if (Object.keys(wanted).length) { apply(); }
}());
