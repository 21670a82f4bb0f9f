// mesh console: live parts (server-sent events), keyboard shortcuts, light and dark.
// No build step and no library: the pages are complete without this file.
"use strict";

const root = document.documentElement;

function setTheme(theme) {
  root.dataset.theme = theme;
  localStorage.setItem("mesh-console-theme", theme);
}
const saved = localStorage.getItem("mesh-console-theme");
if (saved) root.dataset.theme = saved;

function toggleTheme() {
  const dark = root.dataset.theme
    ? root.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  setTheme(dark ? "light" : "dark");
}

// Live parts: <table data-sse="/events/..." data-sse-target="tbody-id" [data-sse-mode]>.
// The server sends rendered (escaped) rows; "replace" swaps the body, "prepend" adds on top.
const MAX_ROWS = 500;
function connect(table) {
  const target = document.getElementById(table.dataset.sseTarget);
  const mode = table.dataset.sseMode || "replace";
  const source = new EventSource(table.dataset.sse);
  const apply = (event) => {
    if (mode === "replace") {
      target.innerHTML = event.data;
    } else {
      target.insertAdjacentHTML("afterbegin", event.data);
      while (target.rows.length > MAX_ROWS) target.deleteRow(-1);
    }
    table.dataset.updated = String(Date.now());
  };
  source.addEventListener("overview", apply);
  source.addEventListener("records", apply);
}

function rowLinks() {
  return Array.from(document.querySelectorAll("main table.rows tbody tr a:first-of-type"));
}

function moveRow(step) {
  const links = rowLinks();
  if (!links.length) return;
  const at = links.indexOf(document.activeElement);
  const next = at < 0 ? (step > 0 ? 0 : links.length - 1) : Math.min(Math.max(at + step, 0), links.length - 1);
  links[next].focus();
}

let pendingG = false;
function onKey(event) {
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
  if (event.key === "Escape" && typing) { event.target.blur(); return; }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if (pendingG) {
    pendingG = false;
    const link = document.querySelector(`header nav a[data-key="${event.key}"]`);
    if (link) { event.preventDefault(); location.href = link.href; }
    return;
  }
  switch (event.key) {
    case "g": pendingG = true; break;
    case "/": event.preventDefault(); document.getElementById("search").focus(); break;
    case "j": moveRow(1); break;
    case "k": moveRow(-1); break;
    case "L": toggleTheme(); break;
    case "?": document.getElementById("keys").showModal(); break;
    default: return;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("theme").addEventListener("click", toggleTheme);
  document.addEventListener("keydown", onKey);
  document.querySelectorAll("table[data-sse]").forEach(connect);
  const preview = document.getElementById("redrive-preview");
  const boxes = document.querySelectorAll('input[type="checkbox"][form="redrive"]');
  if (preview && boxes.length) {
    const count = () => {
      const n = Array.from(boxes).filter((b) => b.checked).length;
      preview.disabled = n === 0;
      preview.textContent = n ? `Preview redrive of ${n} selected` : "Preview redrive of the selected";
    };
    boxes.forEach((b) => b.addEventListener("change", count));
    count();
  }
});
