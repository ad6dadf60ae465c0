// Live logs: each <pre data-stream=URL> appends what its server-sent events carry.
// The stream resumes by itself after a dropped connection (Last-Event-ID is the byte
// offset); when the run ends the page reloads once to show the comparison.
(function () {
  "use strict";
  document.querySelectorAll("pre[data-stream]").forEach(function (pre) {
    var source = new EventSource(pre.getAttribute("data-stream"));
    source.addEventListener("log", function (event) {
      var follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(event.data));
      if (follow) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", function () {
      source.close();
      pre.removeAttribute("data-stream");
      if (!document.querySelector("pre[data-stream]")) window.location.reload();
    });
  });
})();
