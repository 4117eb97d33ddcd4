// Annotator page, the views people draw on (boxes, regions): a shape is dragged with any pointer (mouse, pen or one
// finger: Pointer Events, captured so the drag follows the pointer off the image) and kept in the image's own pixels,
// clamped to the image, at any zoom (viewer.js). Dragging near or past the edge of the zoomed view scrolls it. On a
// touch screen two fingers move the zoomed view and pinch zooms it (the drawing layer alone takes touches from the
// browser: touch-action none in style.css, so the page still scrolls elsewhere).
// The shapes go to the form's hidden "shapes" field; a "shapeschange" event on the form tells annotate.js.
(function () {
  "use strict";
  const task = document.getElementById("task");
  const canvas = document.getElementById("overlay");
  if (!task || !canvas || task.dataset.draws !== "true") { return; }
  const EDGE = 24;  // CSS pixels: a drag this near the view's edge (or past it) scrolls the view
  const MAX_STEP = 24;  // CSS pixels the view scrolls per frame at most
  const PINCH = 1.5;  // how far two fingers spread (or close) for one zoom step
  const form = document.getElementById("answer-form");
  const output = document.getElementById("shapes");
  const stage = document.getElementById("stage");
  const select = document.getElementById("box-class");
  const shapeClass = task.dataset.shapeClass === "true";  // each shape carries the selected class
  const colour = task.dataset.colour;
  const width = Number(task.dataset.width), height = Number(task.dataset.height);
  const ctx = canvas.getContext("2d");
  const shapes = [], fingers = new Map();
  let drag = null;  // { id, start: image pixels, at: client point }
  let pinch = null;  // { mid: client point, dist: CSS pixels }
  let shownWidth = 1, shownHeight = 1, scrolling = false;

  // The overlay's backing store follows the frame's size at this zoom (sharp lines, at most 4096 pixels a side);
  // shapes are drawn in CSS pixels of the frame.
  function fit() {
    shownWidth = canvas.clientWidth || 1; shownHeight = canvas.clientHeight || 1;
    const ratio = Math.min(window.devicePixelRatio || 1, 4096 / Math.max(shownWidth, shownHeight));
    canvas.width = Math.round(shownWidth * ratio); canvas.height = Math.round(shownHeight * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  function clamp(value, lo, hi) { return Math.min(Math.max(value, lo), hi); }

  // A client point in the image's pixels, clamped to the image (the hub refuses a shape outside it).
  function toImage(at) {
    const rect = canvas.getBoundingClientRect();
    return { x: clamp((at.x - rect.left) * width / rect.width, 0, width),
             y: clamp((at.y - rect.top) * height / rect.height, 0, height) };
  }

  function shape(a, b) {
    const s = { x_min: Math.min(a.x, b.x), y_min: Math.min(a.y, b.y), x_max: Math.max(a.x, b.x), y_max: Math.max(a.y, b.y) };
    if (shapeClass) { s.class_id = Number(select.value); }
    return s;
  }

  // A dark outer and a bright inner line plus a light fill: visible on any image, however busy.
  function outline(x, y, w, h) {
    ctx.fillStyle = "rgba(" + colour + ", 0.25)"; ctx.fillRect(x, y, w, h);
    ctx.strokeStyle = "rgba(0, 0, 0, 0.85)"; ctx.lineWidth = 4; ctx.strokeRect(x, y, w, h);
    ctx.strokeStyle = "rgb(" + colour + ")"; ctx.lineWidth = 2; ctx.strokeRect(x, y, w, h);
  }

  function draw(extra) {
    ctx.clearRect(0, 0, shownWidth, shownHeight);
    const sx = shownWidth / width, sy = shownHeight / height;
    shapes.concat(extra ? [extra] : []).forEach(function (s) {
      outline(s.x_min * sx, s.y_min * sy, (s.x_max - s.x_min) * sx, (s.y_max - s.y_min) * sy);
      if (s.class_id !== undefined) {
        ctx.fillStyle = "rgb(" + colour + ")"; ctx.font = "14px sans-serif";
        ctx.fillText(select.options[s.class_id].text, s.x_min * sx + 3, s.y_min * sy + 15);
      }
    });
  }

  function changed() {
    output.value = JSON.stringify(shapes);
    document.getElementById("shape-count").textContent = String(shapes.length);
    draw(null);
    form.dispatchEvent(new CustomEvent("shapeschange"));
  }

  function preview() { if (drag) { draw(shape(drag.start, toImage(drag.at))); } }

  function finish(keep) {
    if (!drag) { return; }
    const s = shape(drag.start, toImage(drag.at));
    drag = null;
    if (keep && s.x_max - s.x_min >= 1 && s.y_max - s.y_min >= 1) { shapes.push(s); }
    changed();
  }

  // How far to scroll along one axis: towards a pointer within EDGE of the view's side or past it, faster further out.
  function push(at, lo, hi) {
    if (at < lo + EDGE) { return -Math.min(lo + EDGE - at, MAX_STEP); }
    if (at > hi - EDGE) { return Math.min(at - (hi - EDGE), MAX_STEP); }
    return 0;
  }

  // One frame of auto-scroll while a drag is held near or past an edge; the shape's start stays in image pixels.
  function autoscroll() {
    scrolling = false;
    if (!drag || !stage.classList.contains("zoomed")) { return; }
    const r = stage.getBoundingClientRect();
    const left = stage.scrollLeft, top = stage.scrollTop;
    stage.scrollLeft += push(drag.at.x, r.left, r.right);
    stage.scrollTop += push(drag.at.y, r.top, r.bottom);
    if (stage.scrollLeft === left && stage.scrollTop === top) { return; }  // not near an edge, or at the end
    preview();
    scrolling = true;
    window.requestAnimationFrame(autoscroll);
  }

  function kick() { if (!scrolling) { autoscroll(); } }

  // Two fingers: the view (at its ends, the page) follows their midpoint, and zooms a step each time they spread or
  // close by PINCH. The view's scroll is kept unrounded here: the browser rounds each step, which drifted.
  function gesture() {
    const [a, b] = Array.from(fingers.values());
    const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 }, dist = Math.hypot(a.x - b.x, a.y - b.y) || 1;
    if (!pinch) { pinch = { mid: mid, dist: dist, x: stage.scrollLeft, y: stage.scrollTop }; return; }
    const wantX = pinch.x - (mid.x - pinch.mid.x), wantY = pinch.y - (mid.y - pinch.mid.y);
    pinch.x = clamp(wantX, 0, stage.scrollWidth - stage.clientWidth);
    pinch.y = clamp(wantY, 0, stage.scrollHeight - stage.clientHeight);
    stage.scrollLeft = pinch.x; stage.scrollTop = pinch.y;
    window.scrollBy(wantX - pinch.x, wantY - pinch.y);  // what the view could not take
    pinch.mid = mid;
    const ratio = dist / pinch.dist;
    if (window.hgenZoomStep && (ratio >= PINCH || ratio <= 1 / PINCH)) {
      window.hgenZoomStep(ratio > 1 ? 1 : -1, mid);
      pinch = { mid: mid, dist: dist, x: stage.scrollLeft, y: stage.scrollTop };
    }
  }

  function point(event) { return { x: event.clientX, y: event.clientY }; }

  canvas.addEventListener("pointerdown", function (event) {
    if (event.pointerType === "mouse" && event.button !== 0) { return; }
    if (event.pointerType === "touch") { fingers.set(event.pointerId, point(event)); }
    // As a mouse press does: the class list (say) gives up the focus, so s, c and n answer after drawing.
    if (event.pointerType !== "mouse" && document.activeElement) { document.activeElement.blur(); }
    if (fingers.size >= 2) {  // a second finger: the view moves, the box just begun is dropped
      finish(false); pinch = null;
      if (fingers.size === 2) { gesture(); }
      return;
    }
    if (drag) { return; }
    drag = { id: event.pointerId, start: toImage(point(event)), at: point(event) };
    try { canvas.setPointerCapture(event.pointerId); } catch (e) { /* the pointer is already gone */ }
  });
  canvas.addEventListener("pointermove", function (event) {
    if (fingers.has(event.pointerId)) {
      fingers.set(event.pointerId, point(event));
      if (fingers.size === 2) { gesture(); return; }
    }
    if (drag && drag.id === event.pointerId) { drag.at = point(event); preview(); kick(); }
  });
  function release(keep) {
    return function (event) {
      fingers.delete(event.pointerId);
      if (fingers.size < 2) { pinch = null; }
      if (drag && drag.id === event.pointerId) { drag.at = keep ? point(event) : drag.at; finish(keep); }
    };
  }
  canvas.addEventListener("pointerup", release(true));
  canvas.addEventListener("pointercancel", release(false));  // the browser took the touch: no half-drawn shape
  canvas.addEventListener("lostpointercapture", release(false));  // after pointerup this finds nothing left to do
  canvas.addEventListener("contextmenu", function (event) { if (drag) { event.preventDefault(); } });
  // The browser makes no gesture of a touch here: a fast lift at a box's end was a fling, and Chromium swallowed the
  // next tap (on Submit, say) as the tap that stops that fling.
  canvas.addEventListener("touchstart", function (event) { event.preventDefault(); }, { passive: false });
  document.getElementById("undo").addEventListener("click", function () { shapes.pop(); changed(); });
  canvas.parentElement.addEventListener("viewlayout", function () { fit(); draw(null); preview(); });
  fit();
  changed();
})();
