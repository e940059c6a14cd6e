// provisiond console: menus, ticks and dialogs. Everything works without this file (menus
// then show their items inline, confirmations open as pages); it only makes them smoother.
"use strict";
document.documentElement.classList.add("js");

function menuOf(button) {
  return document.getElementById(button.getAttribute("aria-controls"));
}

function setOpen(button, open) {
  const menu = menuOf(button);
  if (!menu) return;
  button.setAttribute("aria-expanded", String(open));
  menu.classList.toggle("open", open);
  if (open) {
    const first = menu.querySelector("[role=menuitem]:not(:disabled)");
    if (first) first.focus();
  }
}

function closeMenus(except) {
  document.querySelectorAll("button[aria-haspopup=menu][aria-expanded=true]").forEach(function (b) {
    if (b !== except) setOpen(b, false);
  });
}

document.addEventListener("click", function (e) {
  const button = e.target.closest("button[aria-haspopup=menu]");
  closeMenus(button);
  if (button && !button.disabled) setOpen(button, button.getAttribute("aria-expanded") !== "true");
});

// Keyboard: Escape closes a menu and returns to its button; arrows move between its items.
document.addEventListener("keydown", function (e) {
  const menu = e.target.closest("[role=menu]");
  if (!menu) return;
  const button = document.querySelector("[aria-controls='" + menu.id + "']");
  const items = Array.from(menu.querySelectorAll("[role=menuitem]:not(:disabled)"));
  const i = items.indexOf(e.target);
  if (e.key === "Escape") { setOpen(button, false); button.focus(); e.preventDefault(); }
  else if (e.key === "ArrowDown") { items[(i + 1) % items.length].focus(); e.preventDefault(); }
  else if (e.key === "ArrowUp") { items[(i - 1 + items.length) % items.length].focus(); e.preventDefault(); }
  else if (e.key === "Tab") { setOpen(button, false); }
});

// "More" is enabled while a row is ticked; its reset names how many.
function updateTicks() {
  const more = document.getElementById("more");
  if (!more) return;
  const n = document.querySelectorAll("#rows input[name=id]:checked").length;
  more.disabled = n === 0;
  const count = document.getElementById("ticked");
  if (count) count.textContent = String(n);
}

document.addEventListener("change", function (e) {
  if (e.target.id === "tick-all") {
    document.querySelectorAll("#rows input[name=id]").forEach(function (box) { box.checked = e.target.checked; });
  }
  updateTicks();
});

document.addEventListener("DOMContentLoaded", updateTicks);
document.addEventListener("htmx:load", updateTicks);

// A confirmation fetched into the dialog slot opens as a modal dialog.
document.addEventListener("htmx:afterSwap", function (e) {
  closeMenus(null);
  if (e.detail.target.id !== "dialog-slot") return;
  const dialog = e.detail.target.querySelector("dialog");
  if (dialog && !dialog.open) dialog.showModal();
  const reason = dialog && dialog.querySelector("textarea");
  if (reason) reason.focus();
});

// A confirmation answered with a problem (no reason, too many users) stays in the dialog.
document.addEventListener("htmx:beforeSwap", function (e) {
  if (e.detail.xhr.status === 400 && e.detail.target.id === "dialog-slot") {
    e.detail.shouldSwap = true;
    e.detail.isError = false;
  }
});

// A link to a confirmation page whose dialog is already on this page opens that dialog instead
// (Tokens, Operators). Without this file the link opens the confirmation page.
document.addEventListener("click", function (e) {
  const link = e.target.closest("a[data-dialog]");
  if (!link) return;
  const dialog = document.getElementById(link.getAttribute("data-dialog"));
  if (!dialog || typeof dialog.showModal !== "function") return;
  e.preventDefault();
  dialog.showModal();
  const confirm = dialog.querySelector("button.danger");
  if (confirm) confirm.focus();
});

// A secret shown once (a token, a setup link) is copied with its button; the button shows
// only where the clipboard can be written.
function showCopyButtons() {
  if (!navigator.clipboard) return;
  document.querySelectorAll("button[data-copy]").forEach(function (b) { b.hidden = false; });
}

document.addEventListener("click", function (e) {
  const button = e.target.closest("button[data-copy]");
  if (!button) return;
  const id = button.getAttribute("data-copy");
  const source = document.getElementById(id);
  const said = document.querySelector("[data-copied='" + id + "']");
  navigator.clipboard.writeText(source.textContent.trim()).then(
    function () { if (said) said.textContent = "Copied."; },
    function () { if (said) said.textContent = "Could not copy: select the text and copy it."; }
  );
});

document.addEventListener("DOMContentLoaded", showCopyButtons);

// "Print" of the backup codes: a button only where a script can print (without one, the
// browser's own print command does the same).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-print]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () { window.print(); });
  });
});
