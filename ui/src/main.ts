// The dashboard: a hash router over the views, each rendering into <main>.

import "./style.css";
import { ApiError, setToken, token } from "./api";
import { h, replace } from "./dom";
import { appsView, appView, auditView } from "./views";
import { deploymentView } from "./deployment";
import { signInView } from "./signin";

/** What a view leaves running (streams, timers), stopped when another opens. */
export type Cleanup = () => void;

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
let cleanup: Cleanup | null = null;

export function navigate(hash: string): void {
  if (location.hash === hash) void route();
  else location.hash = hash;
}

/** Shows why a view could not be shown, as a message, never a blank page. */
export function showError(error: unknown, what: string): void {
  if (error instanceof ApiError && error.status === 401) {
    setToken(null);
    signInView(main, "Your token was refused: " + error.message + ". Sign in again.");
    renderNav();
    return;
  }
  let message: string;
  if (error instanceof ApiError && error.status === 404) {
    message = `${what} was not found: ${error.message}. It may belong to another tenant than your token's, or the link is wrong.`;
  } else if (error instanceof ApiError && error.status === 403) {
    message = `Your token may not see ${what}: ${error.message}.`;
  } else if (error instanceof ApiError && error.status === 0) {
    message = `drover's API did not answer while loading ${what}. Is it running? Reload to try again.`;
  } else {
    message = `Could not load ${what}: ${error instanceof Error ? error.message : String(error)}.`;
  }
  replace(
    main,
    h("h1", {}, "Something went wrong"),
    h("p", { class: "notice error", role: "alert" }, message),
    h("p", {}, h("a", { href: "#/apps" }, "Back to the apps")),
  );
}

function renderNav(): void {
  if (!token()) {
    replace(nav);
    return;
  }
  replace(
    nav,
    h("a", { href: "#/apps" }, "Apps"),
    h("a", { href: "#/audit" }, "Audit trail"),
    h(
      "button",
      {
        type: "button",
        class: "link",
        onclick: () => {
          setToken(null);
          navigate("#/signin");
        },
      },
      "Sign out",
    ),
  );
}

async function route(): Promise<void> {
  cleanup?.();
  cleanup = null;
  document.getElementById("connection")!.replaceChildren();
  renderNav();
  const path = location.hash.replace(/^#/, "") || "/apps";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (!token() || parts[0] === "signin") {
    signInView(main);
    return;
  }
  try {
    if (parts[0] === "apps" && parts.length === 1) cleanup = await appsView(main);
    else if (parts[0] === "apps" && parts.length === 2) cleanup = await appView(main, parts[1]);
    else if (parts[0] === "deployments" && parts.length >= 2)
      cleanup = await deploymentView(main, parts[1], parts[3]);
    else if (parts[0] === "audit") cleanup = await auditView(main);
    else showError(new ApiError(404, "not_found", `no page \`${path}\``), "This page");
  } catch (error) {
    showError(error, describe(parts));
  }
  main.focus({ preventScroll: true });
}

function describe(parts: string[]): string {
  if (parts[0] === "deployments") return `Deployment ${parts[1]}`;
  if (parts[0] === "apps" && parts[1]) return `App ${parts[1]}`;
  if (parts[0] === "audit") return "the audit trail";
  return "the apps";
}

window.addEventListener("hashchange", () => void route());
void route();
