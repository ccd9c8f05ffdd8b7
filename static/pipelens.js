// Tells the server the browser's time zone (cookie "tz"), so that it shows times in that zone
// and names it. On the first visit the page was drawn in UTC: draw it again, once, in the zone.
(function () {
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  var wanted = "tz=" + encodeURIComponent(zone || "UTC");
  var known = document.cookie.split("; ").indexOf(wanted) !== -1;
  if (!zone || known) return;
  document.cookie = wanted + "; path=/; max-age=31536000; SameSite=Strict";
  if (document.cookie.split("; ").indexOf(wanted) !== -1) location.reload();
})();

// Live panels poll (hx-trigger="every Ns") only while the tab is visible: a hidden tab's poll is
// cancelled before it is sent. (A trigger filter would do the same with eval, which the
// Content-Security-Policy forbids.)
document.addEventListener("htmx:beforeRequest", function (event) {
  var trigger = event.detail.elt.getAttribute("hx-trigger") || "";
  if (document.visibilityState !== "visible" && trigger.indexOf("every ") === 0) {
    event.preventDefault();
  }
});

// The Gantt's bars are SVG links without href (htmx asks for the step panel on click): Enter or
// Space on a focused bar clicks it, as it would a link.
document.addEventListener("keydown", function (event) {
  var bar = event.target;
  if ((event.key === "Enter" || event.key === " ") && bar.classList &&
      bar.classList.contains("bar-link")) {
    event.preventDefault();
    bar.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  }
});

// The runs page's timeline: dragging across it picks that span of time as the filters' custom
// range (the form's own change event sends it, so the list and the URL follow); a click without
// a drag still opens the run under the pointer.
(function () {
  var drag = null;
  var swallowClick = false;
  function viewX(svg, clientX) {
    var box = svg.getBoundingClientRect();
    return (clientX - box.left) / box.width * svg.viewBox.baseVal.width;
  }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  // What a datetime-local field holds, in the browser's zone (the zone the server reads them in).
  function localText(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + "T" +
      two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  document.addEventListener("pointerdown", function (event) {
    var svg = event.target.closest && event.target.closest("svg.timeline");
    if (!svg || event.button !== 0) return;
    drag = { svg: svg, start: viewX(svg, event.clientX), end: null };
  });
  document.addEventListener("pointermove", function (event) {
    if (!drag) return;
    var x = viewX(drag.svg, event.clientX);
    if (drag.end === null && Math.abs(x - drag.start) < 4) return;
    event.preventDefault();
    drag.end = x;
    var brush = drag.svg.querySelector(".brush");
    brush.setAttribute("x", Math.min(x, drag.start));
    brush.setAttribute("width", Math.abs(x - drag.start));
  });
  document.addEventListener("pointerup", function () {
    var done = drag;
    drag = null;
    if (!done || done.end === null) return;
    swallowClick = true;
    setTimeout(function () { swallowClick = false; }, 0);
    var svg = done.svg;
    var lo = Number(svg.dataset.loNs), hi = Number(svg.dataset.hiNs);
    var left = Number(svg.dataset.left), plot = Number(svg.dataset.plotWidth);
    function ms(x) {
      var f = Math.min(1, Math.max(0, (x - left) / plot));
      return (lo + f * (hi - lo)) / 1e6;
    }
    var a = ms(Math.min(done.start, done.end)), b = ms(Math.max(done.start, done.end));
    var form = document.getElementById("runs-filters");
    if (!form) return;
    // Whole seconds, the end rounded up: the runs at either edge of the drag stay in.
    form.querySelector("#from").value = localText(Math.floor(a / 1000) * 1000);
    form.querySelector("#to").value = localText(Math.ceil(b / 1000) * 1000 + 1000);
    var range = form.querySelector("#range");
    range.value = "custom";
    range.dispatchEvent(new Event("change", { bubbles: true }));
  });
  document.addEventListener("click", function (event) {
    if (swallowClick) { event.preventDefault(); event.stopPropagation(); swallowClick = false; }
  }, true);
})();
