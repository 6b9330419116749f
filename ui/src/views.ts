// The apps, one app (its deployments, live, and its releases), the audit trail.

import { ApiError, get, idempotencyKey, post } from "./api";
import { badge, confirmDialog, h, replace } from "./dom";
import type { Cleanup } from "./main";
import { navigate, showError } from "./main";
import type { App, AuditEntry, Deployment, Page, Release } from "./model";
import { time } from "./model";
import { announce } from "./status";

/** How often the lists of a page are read again while it is open. */
const REFRESH_MS = 2000;

function table(caption: string, head: string[], rows: HTMLElement[], empty: string): HTMLElement {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, ...head.map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, ...rows),
    ),
  );
}

export async function appsView(main: HTMLElement): Promise<Cleanup> {
  const apps = await get<Page<App>>("/v1/apps?limit=100");
  const rows = apps.items.map((app) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: `#/apps/${encodeURIComponent(app.name)}` }, app.name)),
      h("td", {}, app.active_release === null ? "none yet" : `release ${app.active_release}`),
      h("td", {}, String(app.deployments)),
      h("td", {}, `${app.concurrency} / ${app.strategy}`),
    ),
  );
  replace(
    main,
    h("h1", {}, "Apps"),
    table("Your tenant's apps", ["App", "Active release", "Deployments", "Policies"], rows, "No app has been deployed yet."),
  );
  return () => {};
}

function deploymentRow(deployment: Deployment): HTMLElement {
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, h("a", { href: `#/deployments/${deployment.id}` }, h("code", {}, deployment.id))),
    h("td", {}, badge(deployment.state)),
    h("td", {}, time(deployment.created_at)),
    h("td", {}, deployment.release ? `release ${deployment.release.version}` : "—"),
  );
}

export async function appView(main: HTMLElement, name: string): Promise<Cleanup> {
  const path = encodeURIComponent(name);
  const app = await get<App>(`/v1/apps/${path}`);
  const deployments = h("section", { "aria-labelledby": "deployments-title" });
  const releases = h("section", { "aria-labelledby": "releases-title" });
  const summary = h("p", { class: "summary" });

  async function refresh(): Promise<void> {
    const [current, page, history] = await Promise.all([
      get<App>(`/v1/apps/${path}`),
      get<Page<Deployment>>(`/v1/deployments?app=${path}&limit=20`),
      get<Page<Release>>(`/v1/apps/${path}/releases?limit=20`),
    ]);
    replace(
      summary,
      current.active_release === null ? "No active release." : `Active release: ${current.active_release}. `,
      `${current.deployments} deployments; policies ${current.concurrency} / ${current.strategy}.`,
    );
    replace(
      deployments,
      h("h2", { id: "deployments-title" }, "Deployments"),
      table("Newest first, live", ["Deployment", "State", "Submitted", "Release"], page.items.map(deploymentRow), "No deployment yet."),
    );
    replace(
      releases,
      h("h2", { id: "releases-title" }, "Releases"),
      table(
        "Newest first",
        ["Release", "Made by", "At", "Components", ""],
        history.items.map((release) => releaseRow(name, release, current.active_release)),
        "No release yet.",
      ),
    );
  }

  replace(main, h("h1", {}, "App ", h("code", {}, app.name)), summary, deployments, releases);
  await refresh();
  let stopped = false;
  const timer = setInterval(() => {
    if (stopped) return;
    refresh()
      .then(() => announce("ended"))
      .catch((error) => {
        // Without an answer the page stays, saying so, and reads again later.
        if (error instanceof ApiError && error.status === 0) announce("reconnecting");
        else showError(error, `App ${name}`);
      });
  }, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

function releaseRow(app: string, release: Release, active: number | null): HTMLElement {
  const components = Object.entries(release.components)
    .map(([component, what]) => `${component} ${what.version}`)
    .join(", ");
  const action =
    release.version === active
      ? h("span", { class: "active" }, "active")
      : h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: () => void rollback(app, release.version),
          },
          `Roll back to release ${release.version}`,
        );
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, `release ${release.version}`),
    h("td", {}, h("a", { href: `#/deployments/${release.deployment}` }, h("code", {}, release.deployment.slice(0, 13)))),
    h("td", {}, time(release.created_at)),
    h("td", {}, components),
    h("td", {}, action),
  );
}

async function rollback(app: string, version: number): Promise<void> {
  const sure = await confirmDialog(
    `Roll ${app} back to release ${version}? Every component is deployed again as release ${version} holds it, without building.`,
    `Roll back to release ${version}`,
  );
  if (!sure) return;
  try {
    const deployment = await post<Deployment>(
      `/v1/apps/${encodeURIComponent(app)}/releases/${version}/rollback`,
      { "Idempotency-Key": idempotencyKey() },
    );
    navigate(`#/deployments/${deployment.id}`);
  } catch (error) {
    showError(error, `The rollback of ${app} to release ${version}`);
  }
}

export async function auditView(main: HTMLElement): Promise<Cleanup> {
  const entries = await get<Page<AuditEntry>>("/v1/audit?limit=100");
  const rows = entries.items.map((entry) =>
    h(
      "tr",
      {},
      h("td", {}, time(entry.at)),
      h("th", { scope: "row" }, entry.action),
      h(
        "td",
        {},
        entry.target ? h("code", {}, entry.target) : "—",
      ),
      h("td", {}, entry.token ? h("code", {}, entry.token.slice(0, 13)) : "—"),
    ),
  );
  replace(
    main,
    h("h1", {}, "Audit trail"),
    table("Who did what through the API, newest first", ["At", "Action", "Target", "Token"], rows, "Nothing was done yet."),
  );
  return () => {};
}
