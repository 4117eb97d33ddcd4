// Annotator page, how the image is shown: levels (light, contrast, "auto levels") computed on a canvas from the
// image's own pixels, and a zoom. Devices send exactly the frames that are hard to read (dark, noisy, 28x28, small
// objects), so people need to brighten them and look closely. Levels persist across tasks (localStorage: a whole
// field is usually dark); the zoom is per task. Only what people see changes: the answer, and the coordinates of drawn
// shapes (the image's own pixels, annotate.js, which redraws its overlay on the frame's "viewlayout" event), do not.
(function () {
  "use strict";
  const task = document.getElementById("task");
  const frame = document.getElementById("frame");
  if (!task || !frame) { return; }
  const KEY = "hgen.annotate.levels";
  const ZOOMS = [1, 2, 4, 8];
  const viewer = document.getElementById("viewer");
  const stage = document.getElementById("stage");
  const image = document.getElementById("task-image");
  const view = document.getElementById("view");
  const controls = { brightness: byId("brightness"), contrast: byId("contrast"), auto: byId("auto-levels") };
  const displayWidth = Number(stage.dataset.displayWidth), displayHeight = Number(stage.dataset.displayHeight);
  let settings = load(), zoom = 1, source = null, stats = null, pending = false, wheel = 0;

  function byId(id) { return document.getElementById(id); }

  function within(value, lo, hi) {
    return typeof value === "number" && isFinite(value) ? Math.min(Math.max(value, lo), hi) : 0;
  }

  function load() {
    let saved = {};
    try { saved = JSON.parse(window.localStorage.getItem(KEY) || "{}") || {}; } catch (e) { saved = {}; }
    return { brightness: within(saved.brightness, -100, 100), contrast: within(saved.contrast, -100, 100),
             auto: saved.auto === true };
  }

  function save() {
    try { window.localStorage.setItem(KEY, JSON.stringify(settings)); } catch (e) { /* storage off: this page only */ }
  }

  function percentile(hist, rank) {
    let seen = 0;
    for (let v = 0; v < 256; v++) { seen += hist[v]; if (seen > rank) { return v; } }
    return 255;
  }

  // The image's own range (0.5th..99.5th percentile of its channel values) and, for a dark frame, the gamma that lifts
  // the median of what is not black (background, noise floor) to mid-grey: a frame darkened as x ** 2.5 comes back.
  function measure(data) {
    const hist = new Uint32Array(256);
    for (let i = 0; i < data.length; i += 4) { hist[data[i]]++; hist[data[i + 1]]++; hist[data[i + 2]]++; }
    const total = data.length / 4 * 3;
    let lo = percentile(hist, total * 0.005), hi = percentile(hist, total * 0.995);
    if (hi <= lo) { lo = 0; hi = 255; }  // a flat image: nothing to stretch
    const floor = Math.floor(lo + 0.04 * (hi - lo)) + 1;
    let lit = 0;
    for (let v = floor; v < 256; v++) { lit += hist[v]; }
    let seen = 0, median = 1;
    for (let v = floor; v < 256 && lit > 0; v++) {
      seen += hist[v];
      if (seen * 2 >= lit) { median = Math.min((v - lo) / (hi - lo), 1); break; }
    }
    const gamma = median > 0 && median < 0.5 ? Math.max(Math.log(0.5) / Math.log(median), 0.25) : 1;
    return { lo: lo, span: hi - lo, gamma: gamma };
  }

  // One value table for every channel (hues stay): auto levels first, then contrast around mid-grey and light.
  function table() {
    const lut = new Uint8ClampedArray(256);
    const gain = Math.pow(2, settings.contrast / 50), lift = settings.brightness / 100;
    for (let v = 0; v < 256; v++) {
      let t = v / 255;
      if (settings.auto) { t = Math.pow(Math.min(Math.max((v - stats.lo) / stats.span, 0), 1), stats.gamma); }
      lut[v] = Math.round(((t - 0.5) * gain + 0.5 + lift) * 255);
    }
    return lut;
  }

  function paint() {
    pending = false;
    if (!source) { return; }
    const lut = table(), out = new ImageData(source.width, source.height), s = source.data, d = out.data;
    for (let i = 0; i < s.length; i += 4) {
      d[i] = lut[s[i]]; d[i + 1] = lut[s[i + 1]]; d[i + 2] = lut[s[i + 2]]; d[i + 3] = s[i + 3];
    }
    view.getContext("2d").putImageData(out, 0, 0);
    view.dataset.levels = (settings.auto ? "auto " : "") + "b" + settings.brightness + " c" + settings.contrast;
    frame.classList.add("painted");
  }

  function schedule() {
    if (!pending) { pending = true; window.requestAnimationFrame(paint); }
  }

  function prepare() {
    if (!image.naturalWidth || source) { return; }
    view.width = image.naturalWidth; view.height = image.naturalHeight;
    const ctx = view.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(image, 0, 0);
    try { source = ctx.getImageData(0, 0, view.width, view.height); } catch (e) { return; }  // the image stays shown
    stats = measure(source.data);
    paint();
    layout(null);  // pixel crispness may depend on the natural size
  }

  function showSettings() {
    controls.brightness.value = String(settings.brightness);
    controls.contrast.value = String(settings.contrast);
    controls.auto.checked = settings.auto;
    viewer.classList.toggle("altered", settings.auto || settings.brightness !== 0 || settings.contrast !== 0);
  }

  function change(update) {
    settings = Object.assign({}, settings, update);
    save(); showSettings(); schedule();
  }

  // The frame is the image at `zoom` times its displayed size (display.py: whole factors for small images) inside the
  // stage, which keeps that size and scrolls; the point under `anchor` (client coordinates; default the stage's
  // centre) stays where it is. Pixels are drawn hard-edged whenever an image pixel covers two or more screen pixels.
  function layout(anchor) {
    const box = stage.getBoundingClientRect();
    const ax = anchor ? anchor.x - box.left : stage.clientWidth / 2;
    const ay = anchor ? anchor.y - box.top : stage.clientHeight / 2;
    const fx = frame.offsetWidth ? (stage.scrollLeft + ax) / frame.offsetWidth : 0.5;
    const fy = frame.offsetHeight ? (stage.scrollTop + ay) / frame.offsetHeight : 0.5;
    viewer.style.width = displayWidth + "px";
    const base = viewer.clientWidth, baseHeight = base * displayHeight / displayWidth;
    stage.style.height = baseHeight + "px";
    frame.style.width = base * zoom + "px"; frame.style.height = baseHeight * zoom + "px";
    frame.classList.add("sized");
    stage.classList.toggle("zoomed", zoom > 1);
    const pixels = Number(task.dataset.width) || image.naturalWidth;
    frame.classList.toggle("crisp", pixels > 0 && base * zoom >= 2 * pixels);
    stage.scrollLeft = fx * frame.offsetWidth - ax;
    stage.scrollTop = fy * frame.offsetHeight - ay;
    document.querySelectorAll("#zoom button").forEach(function (button) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.zoom) === zoom));
    });
    frame.dataset.zoom = String(zoom);
    frame.dispatchEvent(new CustomEvent("viewlayout"));
  }

  function setZoom(next, anchor) {
    if (next !== zoom) { zoom = next; layout(anchor); }
  }

  function step(direction, anchor) {
    const at = ZOOMS.indexOf(zoom) + direction;
    setZoom(ZOOMS[Math.min(Math.max(at, 0), ZOOMS.length - 1)], anchor);
  }

  // Keys typed into a text field, or with Ctrl / Alt / Cmd (copy, save, switch tab), are not the page's.
  function notForPage(event) {
    const t = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || event.repeat) { return true; }
    return t.isContentEditable || t.tagName === "SELECT" || t.tagName === "TEXTAREA" ||
      (t.tagName === "INPUT" && ["range", "checkbox", "radio", "button", "submit"].indexOf(t.type) < 0);
  }

  function reset() {
    change({ brightness: 0, contrast: 0, auto: false });
    setZoom(1, null);
  }

  controls.brightness.addEventListener("input", function () { change({ brightness: Number(controls.brightness.value) }); });
  controls.contrast.addEventListener("input", function () { change({ contrast: Number(controls.contrast.value) }); });
  controls.auto.addEventListener("change", function () { change({ auto: controls.auto.checked }); });
  byId("view-reset").addEventListener("click", reset);
  document.querySelectorAll("#zoom button").forEach(function (button) {
    button.addEventListener("click", function () { setZoom(Number(button.dataset.zoom), null); });
  });
  // Ctrl + wheel, and a trackpad's pinch (which Chromium sends as one), zooms at the pointer; a plain wheel scrolls.
  // On a touch screen a pinch zooms the page, except over a drawing layer, where draw.js zooms this view.
  stage.addEventListener("wheel", function (event) {
    if (!event.ctrlKey) { return; }
    event.preventDefault();
    wheel += event.deltaY;
    if (Math.abs(wheel) >= 40) { step(wheel < 0 ? 1 : -1, { x: event.clientX, y: event.clientY }); wheel = 0; }
  }, { passive: false });
  document.addEventListener("keydown", function (event) {
    if (notForPage(event)) { return; }
    if (event.key === "+" || event.key === "=") { step(1, null); }
    else if (event.key === "-") { step(-1, null); }
    else if (event.key === "a") { change({ auto: !settings.auto }); }
    else if (event.key === "r") { reset(); }
  });
  window.addEventListener("resize", function () { layout(null); });
  window.hgenNotForPage = notForPage;  // annotate.js filters its keys the same way
  window.hgenZoomStep = step;  // draw.js: a two-finger pinch over the drawing layer

  viewer.classList.add("live");
  showSettings();
  layout(null);
  if (image.complete) { prepare(); } else { image.addEventListener("load", prepare); }
})();
