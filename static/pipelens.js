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
