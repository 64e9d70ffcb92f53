// A tiny DOM builder. Safe by construction: every child that is not a Node becomes a
// text node, and attributes are set with setAttribute, so text from receivers and
// trackers is never parsed as markup. There is no way to pass HTML through it.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") value = v;
    else if (k === "checked") el.checked = Boolean(v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  // After the children, so a <select> has its options when its value is set.
  if (value !== undefined) el.value = String(value);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function mount(target, ...children) {
  target.replaceChildren();
  return append(target, children);
}

// Insert text at the cursor of an <input> or <textarea>, as if typed.
export function insertAtCursor(field, text) {
  const start = field.selectionStart ?? field.value.length;
  const end = field.selectionEnd ?? start;
  field.setRangeText(text, start, end, "end");
  field.dispatchEvent(new Event("input", { bubbles: true }));
  field.focus();
}
