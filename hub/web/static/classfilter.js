// Annotator page, choosing among many classes (more than routes_annotate.FILTER_ABOVE; only then is there a box):
// typing in the filter box narrows the class view's buttons, or the box class select's options, to the classes whose
// name contains the text, ignoring case and accents ("cafe" finds "Café"). "/" focuses the box. Enter takes the
// class named exactly so, else the first one shown (nothing while the box is empty or nothing matches): in the class
// view it answers, as a click on that button does (so not before annotate.js allows answers); in the drawing views it
// becomes the next box's class, and the box is cleared and gives the keys back to the page. Escape does the latter
// without choosing; ArrowDown goes to the first match. Names are read from data-name attributes and only shown or
// hidden (or said as textContent), never parsed as HTML. Without the script the box stays hidden, the list whole.
(function () {
  "use strict";
  const DIACRITICS = /[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]/g;
  const HANGUL = /[\uac00-\ud7a3]/g;
  const box = document.getElementById("class-filter-box");
  const input = document.getElementById("class-filter") || document.getElementById("box-class-filter");
  if (!box || !input) { return; }
  const select = document.getElementById("box-class");  // drawing views: options; class view: buttons
  const list = document.getElementById("class-list");
  const count = document.getElementById("class-filter-count");
  const items = select ? Array.from(select.options) : Array.from(list.querySelectorAll(".class-btn"));
  const names = items.map(function (item) { return fold(nameOf(item)); });
  const notForPage = window.hgenNotForPage ||  // viewer.js's filter; without it, the fields' own keys at least
    function (event) { return event.repeat || /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName); };
  let target = null;  // what Enter takes

  function nameOf(item) { return item.dataset.name || ""; }  // the template's (auto-escaped) attribute

  // What people type: compatibility forms apart (full-width letters, ligatures), accents off, lower case. Only the
  // generic combining diacritics go (the blocks Latin, Greek and Cyrillic accents decompose into); a script's own
  // marks are letters there and stay, composed again: "カラス" does not find "ガラス", "कि" does not find "का".
  // Hangul syllables stay split into their letters, so a syllable still being typed ("하", "한ㄱ") finds "한국".
  function fold(text) {
    return text.normalize("NFKD").replace(DIACRITICS, "").normalize("NFC")
      .replace(HANGUL, function (syllable) { return syllable.normalize("NFD"); }).toLowerCase().trim();
  }

  function say(text) { count.textContent = text; }

  function filter() {
    const typed = fold(input.value);
    let shown = 0, first = null, exact = null;
    items.forEach(function (item, i) {
      const match = names[i].indexOf(typed) >= 0;
      item.hidden = !match;
      if (!match) { return; }
      shown += 1;
      first = first || item;
      if (!exact && names[i] === typed) { exact = item; }
    });
    if (target) { target.classList.remove("target"); }
    target = typed ? exact || first : null;
    if (target) { target.classList.add("target"); }
    if (list) { list.scrollTop = 0; }
    if (!typed) { say(""); } else if (!target) { say("No class matches; Escape clears."); } else {
      say(shown + " of " + items.length + "; Enter: " + nameOf(target));
    }
  }

  function leave() {
    input.value = "";
    filter();
    input.blur();
  }

  function pick() {
    if (!target) { return; }
    if (!select) { target.click(); return; }  // a disabled button (no answer yet, or sent) ignores it
    select.value = target.value;
    select.dispatchEvent(new Event("change", { bubbles: true }));
    const chosen = nameOf(target);
    leave();
    say("Next box: " + chosen);
  }

  input.addEventListener("input", filter);
  input.addEventListener("keydown", function (event) {
    if (event.isComposing) { return; }
    if (event.key === "Enter") { event.preventDefault(); pick(); }  // never the form's implicit submit
    else if (event.key === "Escape") { event.preventDefault(); leave(); }
    else if (event.key === "ArrowDown" && target) { event.preventDefault(); (select || target).focus(); }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || notForPage(event)) { return; }
    event.preventDefault();  // the "/" is not typed into the box
    input.focus();
    input.select();
  });
  box.hidden = false;
})();
