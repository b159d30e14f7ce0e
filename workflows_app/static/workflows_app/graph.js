/* Large step graphs (more than 30 steps): by default the whole drawing is scaled to fit
   the viewport (an overview); a button switches to the natural size in a box that pans
   by dragging or scrolling. Smaller graphs need nothing: the CSS scales them to fit. */
(function () {
  "use strict";

  var LARGE = 30;

  function setUp(canvas) {
    var svgs = canvas.querySelectorAll("svg.wf-graph");
    if (!svgs.length || Number(svgs[0].getAttribute("data-nodes")) <= LARGE) return;
    if (canvas.previousElementSibling && canvas.previousElementSibling.classList.contains("wf-graph-tools")) return;
    var tools = document.createElement("div");
    tools.className = "wf-graph-tools";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "button wf-zoom";
    var hint = document.createElement("span");
    hint.className = "wf-quiet";
    tools.appendChild(button);
    tools.appendChild(hint);
    canvas.parentNode.insertBefore(tools, canvas);

    function show(zoomed) {
      canvas.classList.toggle("wf-zoomed", zoomed);
      canvas.classList.toggle("wf-fit", !zoomed);
      button.textContent = zoomed ? "Fit to view" : "Actual size";
      hint.textContent = zoomed ? "Drag or scroll to move around." : "Whole graph, scaled to fit.";
    }
    button.addEventListener("click", function () {
      show(!canvas.classList.contains("wf-zoomed"));
    });
    show(false);

    var start = null;
    canvas.addEventListener("pointerdown", function (event) {
      if (!canvas.classList.contains("wf-zoomed") || event.target.closest("a")) return;
      start = { x: event.clientX, y: event.clientY, left: canvas.scrollLeft, top: canvas.scrollTop };
      canvas.classList.add("wf-panning");
    });
    window.addEventListener("pointermove", function (event) {
      if (!start) return;
      canvas.scrollLeft = start.left - (event.clientX - start.x);
      canvas.scrollTop = start.top - (event.clientY - start.y);
    });
    window.addEventListener("pointerup", function () {
      start = null;
      canvas.classList.remove("wf-panning");
    });
  }

  function setUpAll(root) {
    (root || document).querySelectorAll(".wf-canvas").forEach(setUp);
  }

  window.wfGraph = { setUp: setUpAll };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { setUpAll(); });
  } else {
    setUpAll();
  }
})();
