// The invite token travels in the link's fragment (never sent to a server, so never in an access log):
// copy it into the form, then drop it from the address bar.
(function () {
  var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash || "");
  var field = document.getElementById("join-token");
  if (match && field && !field.value) {
    field.value = decodeURIComponent(match[1]);
    history.replaceState(null, "", window.location.pathname);
  }
})();
