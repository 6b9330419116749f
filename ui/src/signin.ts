// Sign in with an API token; it is kept in session storage, for this tab only.

import { ApiError, get, setToken } from "./api";
import { h, replace } from "./dom";
import { navigate } from "./main";

export function signInView(main: HTMLElement, notice?: string): void {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
    "aria-describedby": "token-help",
  });
  const message = h("p", { id: "signin-message", role: "alert", class: notice ? "notice error" : "" }, notice ?? "");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "A token of your tenant, e.g. from `drover tenant create` or `drover token create`. It stays in this tab.",
    ),
    h("button", { type: "submit" }, "Sign in"),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    setToken(value);
    try {
      await get("/v1/apps?limit=1");
      // Where the link led, or the apps.
      navigate(location.hash && !location.hash.startsWith("#/signin") ? location.hash : "#/apps");
    } catch (error) {
      setToken(null);
      message.className = "notice error";
      message.textContent =
        error instanceof ApiError && error.status === 401
          ? `That token was refused: ${error.message}. Check it, or create one with \`drover token create\`.`
          : `Could not sign in: ${error instanceof Error ? error.message : String(error)}.`;
      input.focus();
    }
  });
  replace(main, form);
  input.focus();
}
