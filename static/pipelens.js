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
