// Annotator page: number keys pick a class, s / c skip or can't tell, n "nothing here" (boxes, regions); boxes and
// regions are drawn by dragging, at any zoom (viewer.js), and sent in the image's own pixels.
// Time to answer is measured from the image being shown to the answer and sent as elapsed_ms.
// What differs per view comes from the task's data-* attributes (the view's own), never from its name.
(function () {
  "use strict";
  const task = document.getElementById("task");
  if (!task) { return; }
  const form = document.getElementById("answer-form");
  const draws = task.dataset.draws === "true";  // people drag shapes over the image
  const shapeClass = task.dataset.shapeClass === "true";  // each shape carries the selected class
  const image = document.getElementById("task-image");
  const canvas = document.getElementById("overlay");
  const shapes = [];
  let shownAt = performance.now();
  image.addEventListener("load", function () { shownAt = performance.now(); });

  function stamp() { document.getElementById("elapsed").value = String(Math.round(performance.now() - shownAt)); }

  form.addEventListener("submit", function (event) {
    const nothing = event.submitter && event.submitter.id === "nothing";  // "nothing here" sends no shapes
    document.getElementById("shapes").value = JSON.stringify(nothing ? [] : shapes);
    stamp();
  });

  function press(button) { if (button) { form.requestSubmit(button); } }
  const notForPage = window.hgenNotForPage ||  // viewer.js's filter; without it, the fields' own keys at least
    function (event) { return event.repeat || /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName); };

  document.addEventListener("keydown", function (event) {
    if (notForPage(event)) { return; }
    if (event.key === "s") { press(document.getElementById("skip")); return; }
    if (event.key === "c") { press(document.getElementById("cant-tell")); return; }
    if (event.key === "n") { press(document.getElementById("nothing")); return; }
    if (!/^[0-9]$/.test(event.key)) { return; }
    if (!draws) {
      press(document.querySelector('.class-btn[data-key="' + event.key + '"]'));
    } else {
      const select = document.getElementById("box-class");
      const index = (Number(event.key) + 9) % 10;
      if (select && index < select.options.length) { select.selectedIndex = index; }
    }
  });

  if (!draws || !canvas) { return; }
  const width = Number(task.dataset.width), height = Number(task.dataset.height);
  const ctx = canvas.getContext("2d");
  let start = null, shownWidth = 1, shownHeight = 1;

  // The overlay's backing store follows the frame's size at this zoom (sharp lines, at most 4096 pixels a side);
  // shapes are drawn in CSS pixels of the frame.
  function fit() {
    shownWidth = canvas.clientWidth || 1; shownHeight = canvas.clientHeight || 1;
    const ratio = Math.min(window.devicePixelRatio || 1, 4096 / Math.max(shownWidth, shownHeight));
    canvas.width = Math.round(shownWidth * ratio); canvas.height = Math.round(shownHeight * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  function toImage(event) {
    const rect = canvas.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
    return { x: x * width / rect.width, y: y * height / rect.height };
  }

  const colour = task.dataset.colour;
  const submit = document.getElementById("submit-shapes");

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
        const select = document.getElementById("box-class");
        ctx.fillText(select.options[s.class_id].text, s.x_min * sx + 3, s.y_min * sy + 15);
      }
    });
    document.getElementById("shape-count").textContent = String(shapes.length);
    submit.disabled = shapes.length === 0;  // nothing drawn: skip or can't tell instead
  }

  function shape(a, b) {
    const s = { x_min: Math.min(a.x, b.x), y_min: Math.min(a.y, b.y), x_max: Math.max(a.x, b.x), y_max: Math.max(a.y, b.y) };
    if (shapeClass) { s.class_id = Number(document.getElementById("box-class").value); }
    return s;
  }

  canvas.addEventListener("mousedown", function (event) { start = toImage(event); });
  canvas.addEventListener("mousemove", function (event) { if (start) { draw(shape(start, toImage(event))); } });
  window.addEventListener("mouseup", function (event) {
    if (!start) { return; }
    const s = shape(start, toImage(event));
    start = null;
    if (s.x_max - s.x_min >= 1 && s.y_max - s.y_min >= 1) { shapes.push(s); }
    draw(null);
  });
  document.getElementById("undo").addEventListener("click", function () { shapes.pop(); draw(null); });
  canvas.parentElement.addEventListener("viewlayout", function () { fit(); draw(null); });
  fit();
  draw(null);
})();
