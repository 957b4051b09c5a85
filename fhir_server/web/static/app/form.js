/* The rating form's behaviour: visual-analog lines (pointer, keyboard, screen reader), enableWhen, drafts saved to
   the server session, and a polite check of required items before sending.  Everything it needs is in the page
   (rendered from the Questionnaire); no token is ever held here: the session cookie is HttpOnly.  Its words come
   from the page too (the JSON block #form-texts, in the page's language): the script holds no text of its own. */
(function () {
  "use strict";

  var form = document.getElementById("rating-form");
  if (!form) { return; }
  var csrfToken = form.elements.csrf_token.value;
  var draftUrl = form.getAttribute("data-draft-url");
  var statusBox = document.getElementById("form-status");
  var submitButton = form.querySelector(".submit");
  var sending = false;
  var textBlock = document.getElementById("form-texts");
  var texts = textBlock ? JSON.parse(textBlock.textContent) : {};
  function text(name, fallback) { return Object.prototype.hasOwnProperty.call(texts, name) ? texts[name] : fallback; }
  function valueText(value, max) {
    return text("valueText", "{value} out of {maximum}").replace("{value}", String(value)).replace("{maximum}", String(max));
  }

  function items() { return Array.prototype.slice.call(form.querySelectorAll("[data-link-id]")); }
  function fieldOf(item) { return item.querySelector('[name^="answer."]'); }

  /* The item's current answer as its control submits it ("" when none). */
  function valueOf(item) {
    if (item.getAttribute("data-kind") === "choice" || item.getAttribute("data-kind") === "boolean") {
      var checked = item.querySelector("input[type=radio]:checked");
      return checked ? checked.value : "";
    }
    var field = fieldOf(item);
    return field ? field.value.trim() : "";
  }

  function itemByLinkId(linkId) {
    return items().filter(function (i) { return i.getAttribute("data-link-id") === linkId; })[0] || null;
  }

  /* -- visual-analog lines ------------------------------------------------------------------------------------ */
  function VisualAnalogScale(item) {
    var slider = item.querySelector("[role=slider]");
    var track = slider.querySelector(".vas-track");
    var mark = slider.querySelector(".vas-mark");
    var field = fieldOf(item);
    var min = Number(slider.getAttribute("data-min"));
    var max = Number(slider.getAttribute("data-max"));
    var step = Number(slider.getAttribute("data-step")) || 1;
    var value = field.value === "" ? null : Number(field.value);
    var before = null;
    var dragging = false;
    /* The line runs in the page's direction (form.css): in a right-to-left page its minimum is on the right, where
       the "low" anchor is.  Pointer and arrow keys read it the same way, so a mark's value is what it shows. */
    var rtl = window.getComputedStyle(slider).direction === "rtl";

    function show() {
      if (value === null) {
        mark.hidden = true;
        slider.removeAttribute("aria-valuenow");
        slider.setAttribute("aria-valuetext", text("unmarked", "Not marked yet"));
        return;
      }
      mark.hidden = false;
      mark.style.insetInlineStart = ((value - min) / (max - min) * 100) + "%";
      slider.setAttribute("aria-valuenow", String(value));
      slider.setAttribute("aria-valuetext", valueText(value, max));
    }

    function set(next, final) {
      if (next !== null) {
        next = Math.round(Math.min(max, Math.max(min, next)) / step) * step;
      }
      var changed = next !== value;
      value = next;
      field.value = value === null ? "" : String(value);
      show();
      if (value !== null) { clearError(item); }
      if (final) { answered(); }
      return changed;
    }

    function fromPointer(event) {
      var box = track.getBoundingClientRect();
      var along = rtl ? box.right - event.clientX : event.clientX - box.left;  /* from the line's start */
      return min + along / box.width * (max - min);
    }

    slider.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) { return; }
      before = value;
      dragging = true;
      slider.setPointerCapture(event.pointerId);
      slider.focus();
      set(fromPointer(event), false);
      event.preventDefault();
    });
    slider.addEventListener("pointermove", function (event) {
      if (dragging) { set(fromPointer(event), false); }
    });
    slider.addEventListener("pointerup", function (event) {
      if (!dragging) { return; }
      dragging = false;
      set(fromPointer(event), true);
    });
    /* The browser took the gesture over (a vertical swipe to scroll): that was not a mark, so undo it. */
    slider.addEventListener("pointercancel", function () {
      if (!dragging) { return; }
      dragging = false;
      set(before, false);
    });

    /* Arrows move 1 step (1 mm), Page Up/Down 10, Home/End go to the ends.  An unmarked line has no position to
       move from: the first arrow or page key places the mark at the middle, Home/End at an end.  Left and right
       move the mark the way the arrow points (towards "high" in a right-to-left page is leftwards). */
    slider.addEventListener("keydown", function (event) {
      var towardsRight = rtl ? -step : step;
      var moves = {
        ArrowRight: towardsRight, ArrowUp: step, ArrowLeft: -towardsRight, ArrowDown: -step,
        PageUp: 10 * step, PageDown: -10 * step
      };
      var next;
      if (event.key === "Home") { next = min; }
      else if (event.key === "End") { next = max; }
      else if (Object.prototype.hasOwnProperty.call(moves, event.key)) {
        next = value === null ? Math.round((min + max) / 2) : value + moves[event.key];
      } else { return; }
      event.preventDefault();
      set(next, true);
    });

    show();
  }

  /* -- enableWhen: the conditions come from the Questionnaire; the server applies the same rules ---------------- */
  function expectedOf(condition) {
    for (var key in condition) {
      if (key.indexOf("answer") !== 0) { continue; }
      var expected = condition[key];
      if (key === "answerCoding") { return expected.code; }
      return String(expected);
    }
    return "";
  }

  function holds(condition) {
    var source = itemByLinkId(condition.question);
    var answer = source && !source.hidden ? valueOf(source) : "";
    var expected = expectedOf(condition);
    switch (condition.operator) {
      case "exists": return (answer !== "") === (expected === "true");
      case "=": return answer !== "" && answer === expected;
      case "!=": return answer === "" || answer !== expected;
      case ">": return answer !== "" && Number(answer) > Number(expected);
      case "<": return answer !== "" && Number(answer) < Number(expected);
      case ">=": return answer !== "" && Number(answer) >= Number(expected);
      case "<=": return answer !== "" && Number(answer) <= Number(expected);
      default: return false;
    }
  }

  function applyEnableWhen() {
    form.querySelectorAll("[data-enable-when]").forEach(function (element) {
      var rule = JSON.parse(element.getAttribute("data-enable-when"));
      var results = rule.conditions.map(holds);
      var enabled = rule.behavior === "any" ? results.indexOf(true) >= 0 : results.indexOf(false) < 0;
      element.hidden = !enabled;
      element.querySelectorAll("input, textarea").forEach(function (control) { control.disabled = !enabled; });
    });
  }

  /* -- drafts: saved to the server session after each change, so a reload restores them ------------------------ */
  var draftTimer = null;
  function collectAnswers() {
    var answers = {};
    items().forEach(function (item) {
      var kind = item.getAttribute("data-kind");
      if (item.hidden || kind === "group") { return; }
      var value = valueOf(item);
      if (value === "") { return; }
      answers[item.getAttribute("data-link-id")] = kind === "slider" ? Number(value) : value;
    });
    return answers;
  }
  function saveDraft() {
    draftTimer = null;
    if (sending) { return; }
    fetch(draftUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
      body: JSON.stringify({ answers: collectAnswers() })
    }).then(function (response) {
      /* Submitted in another tab, or the session closed: the page itself says what to do now. */
      if (response.status === 409 || response.status === 403) { window.location.reload(); }
    }).catch(function () { /* offline for a moment: the next change saves again, the page keeps the answers */ });
  }
  function answered() {
    applyEnableWhen();
    if (draftTimer !== null) { clearTimeout(draftTimer); }
    draftTimer = setTimeout(saveDraft, 250);
  }

  /* -- required items: checked before sending, with a polite message and focus on the first one missing -------- */
  function controlOf(item) {
    return item.querySelector("[role=slider], input:not([type=hidden]), textarea");
  }
  function setError(item, text) {
    var message = item.querySelector(".item-error");
    message.textContent = text;
    message.hidden = false;
    item.setAttribute("data-invalid", "true");
    item.querySelectorAll("[role=slider], input:not([type=hidden]), textarea").forEach(function (control) {
      control.setAttribute("aria-invalid", "true");
    });
  }
  function clearError(item) {
    var message = item.querySelector(".item-error");
    if (!message || message.hidden) { return; }
    message.hidden = true;
    message.textContent = "";
    item.removeAttribute("data-invalid");
    item.querySelectorAll("[aria-invalid]").forEach(function (control) { control.removeAttribute("aria-invalid"); });
    if (!form.querySelector('[data-invalid="true"]')) {
      statusBox.textContent = "";
      statusBox.classList.remove("status-error");
    }
  }

  form.addEventListener("submit", function (event) {
    if (sending) { event.preventDefault(); return; }  /* a second tap while the first is on its way */
    var missing = items().filter(function (item) {
      return item.getAttribute("data-required") === "true" && !item.hidden &&
        item.getAttribute("data-kind") !== "group" && valueOf(item) === "";
    });
    if (missing.length > 0) {
      event.preventDefault();
      missing.forEach(function (item) { setError(item, item.getAttribute("data-required-message")); });
      statusBox.classList.add("status-error");
      var counts = text("missing", {});
      statusBox.textContent = counts[String(missing.length)] || (missing.length === 1
        ? "One question still needs an answer. It is marked above."
        : missing.length + " questions still need an answer. They are marked above.");
      controlOf(missing[0]).focus();
      return;
    }
    sending = true;
    if (draftTimer !== null) { clearTimeout(draftTimer); }
    submitButton.setAttribute("aria-disabled", "true");
    submitButton.textContent = text("sending", "Sending\u2026");
  });

  form.addEventListener("change", function (event) {
    var item = event.target.closest("[data-link-id]");
    if (item && valueOf(item) !== "") { clearError(item); }
    answered();
  });

  /* -- the language switch: the answers on the page go along and are kept as the draft ------------------------- */
  var languageSwitch = document.getElementById("language-switch");
  if (languageSwitch) {
    languageSwitch.addEventListener("submit", function () {
      if (draftTimer !== null) { clearTimeout(draftTimer); draftTimer = null; }
      languageSwitch.elements.draft.value = JSON.stringify(collectAnswers());
    });
  }

  items().forEach(function (item) {
    if (item.getAttribute("data-kind") === "slider") { VisualAnalogScale(item); }
  });
  applyEnableWhen();
  /* The page is back from the history cache after sending: show what the server says now. */
  window.addEventListener("pageshow", function (event) { if (event.persisted) { window.location.reload(); } });
}());
