// A small element builder: h("a", { href: "#/apps" }, "Apps").

type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") element.addEventListener(key.replace(/^on/, ""), value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  append(element, ...children);
  return element;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag: string, attributes: Record<string, string | number>): SVGElement {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

/** A state as a badge: its colour and its word (never the colour alone). */
export function badge(state: string): HTMLElement {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state.replace("_", " "));
}

/** Asks to confirm `question` in a modal dialog; resolves with the answer. */
export function confirmDialog(question: string, confirm: string): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-question" },
      h("p", { id: "confirm-question" }, question),
    );
    const answer = (value: boolean) => () => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    append(
      dialog,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: answer(false) }, "Keep it"),
        h("button", { type: "button", class: "danger", onclick: answer(true) }, confirm),
      ),
    );
    dialog.addEventListener("cancel", answer(false));
    document.body.append(dialog);
    dialog.showModal();
  });
}
