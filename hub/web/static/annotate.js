// Annotator page, the answer: number keys press the answer button that carries that data-key (the first ten classes;
// with many classes the model's guesses, view_class.html) or, where people draw, pick the next box's class; s / c
// skip or can't tell, n "nothing here" (boxes, regions); draw.js keeps the drawn shapes in the form, classfilter.js
// filters a long class list.
// An answer is sent once per task: after the first submit every answer button is disabled and keys are ignored (a
// double click, double tap or two quick keys sent it twice: the hub refused the second, 409, and showed an error).
// Nobody answers a task they have not seen: answers wait for the image, and on the page that follows an answer from
// this tab, for ARM_MS more (the second press of a double press landed on the next task, just shown).
// Time to answer is measured from the image being shown to the answer and sent as elapsed_ms.
// What differs per view comes from the task's data-* attributes (the view's own), never from its name.
(function () {
  "use strict";
  const task = document.getElementById("task");
  if (!task) { return; }
  const ARM_MS = 500;  // longer than a double click's or a double press's gap; shorter than reading a frame
  const ANSWERED = "hgen.annotate.answered";  // sessionStorage: this tab has just sent an answer
  const form = document.getElementById("answer-form");
  const draws = task.dataset.draws === "true";  // people drag shapes over the image
  const image = document.getElementById("task-image");
  const shapesField = document.getElementById("shapes");
  const afterAnswer = takeFlag();
  let shownAt = null, state = "waiting";  // "waiting" for the image (and ARM_MS), "ready", "sent"

  function takeFlag() {
    try {
      const set = window.sessionStorage.getItem(ANSWERED) !== null;
      window.sessionStorage.removeItem(ANSWERED);
      return set;
    } catch (e) { return false; }  // storage off: only the wait for the image
  }

  function setFlag() {
    try { window.sessionStorage.setItem(ANSWERED, "1"); } catch (e) { /* storage off */ }
  }

  // Answer buttons are enabled only while an answer may go; "submit" also needs a shape drawn.
  function refresh() {
    task.dataset.state = state;
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.disabled = state !== "ready" || (button.id === "submit-shapes" && shapesField.value === "[]");
    });
  }

  function arm() {
    if (state === "waiting") { state = "ready"; refresh(); }
  }

  // The image is on screen (or failed to load: skip and can't tell must still work).
  function shown() {
    if (shownAt !== null) { return; }
    shownAt = performance.now();
    if (afterAnswer) { window.setTimeout(arm, ARM_MS); } else { arm(); }
  }

  function stamp() { document.getElementById("elapsed").value = String(Math.round(performance.now() - shownAt)); }

  form.addEventListener("submit", function (event) {
    if (state !== "ready") { event.preventDefault(); return; }
    if (event.submitter && event.submitter.id === "nothing") { shapesField.value = "[]"; }  // no shapes with it
    stamp();
    state = "sent";
    setFlag();
    // Disabled after the form's fields are read (a disabled submitter would not be sent); a submit another handler
    // cancelled sent nothing, so the page answers again.
    window.setTimeout(function () {
      if (event.defaultPrevented) { state = "ready"; }
      refresh();
    }, 0);
  });
  form.addEventListener("shapeschange", refresh);

  function press(button) {
    if (button && state === "ready" && !button.disabled) { form.requestSubmit(button); }
  }
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

  // Back to a page kept in the browser's memory: its task is answered; show the current one instead.
  window.addEventListener("pageshow", function (event) { if (event.persisted) { window.location.reload(); } });
  image.addEventListener("load", shown);
  image.addEventListener("error", shown);
  refresh();
  if (image.complete) { shown(); }
})();
