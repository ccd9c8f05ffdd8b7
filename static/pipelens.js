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

// The runs page's timeline: dragging across it, or picking a span with the keyboard while it
// has focus (arrow keys move, Shift+arrow keys extend, Home/End go to an edge, Enter applies,
// Escape clears), sets that span of time as the filters' custom range (the form's own change
// event sends it, so the list and the URL follow); a click without a drag still opens the run
// under the pointer.
(function () {
  var drag = null;
  var swallowClick = false;
  // The keyboard's pick on the focused chart: cursor and anchor in viewBox units (anchor null:
  // nothing picked yet). Kept across the chart's 10 s redraws, which a pick holds back.
  var keys = null;
  var refocus = false;
  var STEPS = 50;
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
  function plot(svg) {
    return { left: Number(svg.dataset.left), width: Number(svg.dataset.plotWidth),
             lo: Number(svg.dataset.loNs), hi: Number(svg.dataset.hiNs) };
  }
  // Milliseconds since the epoch at viewBox x.
  function msAt(svg, x) {
    var p = plot(svg);
    var f = Math.min(1, Math.max(0, (x - p.left) / p.width));
    return (p.lo + f * (p.hi - p.lo)) / 1e6;
  }
  function showBrush(svg, x0, x1) {
    var brush = svg.querySelector(".brush");
    brush.setAttribute("x", Math.min(x0, x1));
    brush.setAttribute("width", Math.abs(x1 - x0));
  }
  function say(svg, text) {
    var status = svg.parentNode.querySelector(".brush-status");
    if (status) status.textContent = text;
  }
  // The span between viewBox x0 and x1 as the form's custom range, sent by its change event.
  function applyRange(svg, x0, x1) {
    var a = msAt(svg, Math.min(x0, x1)), b = msAt(svg, Math.max(x0, x1));
    var form = document.getElementById("runs-filters");
    if (!form) return;
    // Whole seconds, the end rounded up: the runs at either edge of the span stay in.
    form.querySelector("#from").value = localText(Math.floor(a / 1000) * 1000);
    form.querySelector("#to").value = localText(Math.ceil(b / 1000) * 1000 + 1000);
    var range = form.querySelector("#range");
    range.value = "custom";
    range.dispatchEvent(new Event("change", { bubbles: true }));
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
    showBrush(drag.svg, drag.start, x);
  });
  document.addEventListener("pointerup", function () {
    var done = drag;
    drag = null;
    if (!done || done.end === null) return;
    swallowClick = true;
    setTimeout(function () { swallowClick = false; }, 0);
    applyRange(done.svg, done.start, done.end);
  });
  document.addEventListener("click", function (event) {
    if (swallowClick) { event.preventDefault(); event.stopPropagation(); swallowClick = false; }
  }, true);
  document.addEventListener("keydown", function (event) {
    var svg = event.target;
    if (!svg.matches || !svg.matches("svg.timeline")) return;
    var p = plot(svg);
    if (!keys) keys = { cursor: p.left, anchor: null };
    var step = p.width / STEPS;
    var to = null;
    if (event.key === "ArrowRight") to = keys.cursor + step;
    else if (event.key === "ArrowLeft") to = keys.cursor - step;
    else if (event.key === "Home") to = p.left;
    else if (event.key === "End") to = p.left + p.width;
    if (to !== null) {
      event.preventDefault();
      to = Math.min(p.left + p.width, Math.max(p.left, to));
      if (event.shiftKey && keys.anchor === null) keys.anchor = keys.cursor;
      if (!event.shiftKey) keys.anchor = null;
      keys.cursor = to;
    } else if (event.key === "Escape") {
      event.preventDefault();
      keys.anchor = null;
    } else if (event.key === "Enter" && keys.anchor !== null && keys.anchor !== keys.cursor) {
      event.preventDefault();
      var picked = keys;
      keys = null;
      refocus = true;
      applyRange(svg, picked.anchor, picked.cursor);
      return;
    } else {
      return;
    }
    var from = localText(msAt(svg, keys.cursor)).replace("T", " ");
    if (keys.anchor === null) {
      showBrush(svg, keys.cursor - 1, keys.cursor + 1);
      say(svg, "At " + from + ". Shift and an arrow key pick a span.");
    } else {
      showBrush(svg, keys.anchor, keys.cursor);
      var ends = [msAt(svg, keys.anchor), msAt(svg, keys.cursor)].sort(function (a, b) { return a - b; });
      say(svg, "Picked " + localText(ends[0]).replace("T", " ") + " to " +
        localText(ends[1]).replace("T", " ") + ". Enter shows its runs, Escape clears.");
    }
  });
  // Leaving the chart drops the keyboard's pick.
  document.addEventListener("focusout", function (event) {
    if (event.target.matches && event.target.matches("svg.timeline") && !refocus) {
      keys = null;
      showBrush(event.target, 0, 0);
      say(event.target, "");
    }
  });
  // The chart's own 10 s redraw waits while a keyboard pick is under way (it would drop it).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var box = event.detail.elt;
    if (keys && box.classList && box.classList.contains("timeline-box") &&
        box.contains(document.activeElement) && !refocus) {
      event.preventDefault();
    }
  });
  // After Enter the chart is drawn again for the new range: the focus goes back to it.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!refocus || event.detail.target.id !== "runs_timeline") return;
    refocus = false;
    var svg = event.detail.target.querySelector("svg.timeline");
    if (svg) svg.focus();
  });
})();
