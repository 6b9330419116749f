// The dashboard end to end, in Debian's chromium driven by playwright-core, against
// a live `drover serve`. Screenshots go to ui/artifacts/ (or $UI_ARTIFACTS).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { Proxy, Site, eventually } from "./site.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const artifacts = process.env.UI_ARTIFACTS ?? path.join(here, "..", "artifacts");
mkdirSync(artifacts, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const TIMEOUT = 30_000;

let site;
let browser;

before(async () => {
  site = await Site.start();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
});

after(async () => {
  await browser?.close();
  await site?.stop();
});

async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

async function newPage(base = site.base, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ baseURL: base, viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.errors = errors;
  return page;
}

async function signIn(page, token) {
  await page.goto("/ui/");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** Accessibility: axe finds nothing serious or critical on the page as it is. */
async function assertAccessible(page, what) {
  const violations = await page.evaluate(async (source) => {
    // eslint-disable-next-line no-eval
    (0, eval)(source);
    const result = await globalThis.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((violation) => ["serious", "critical"].includes(violation.impact))
      .map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`);
  }, axeSource);
  assert.deepEqual(violations, [], `accessibility of ${what}`);
}

function node(page, task) {
  return page.locator(`[data-task="${task}"]`);
}

async function waitTask(page, task, state) {
  await page.locator(`[data-task="${task}"][data-state="${state}"]`).waitFor();
}

/** Records, in the page, the order in which tasks first turn green. */
async function recordGreens(page) {
  await page.evaluate(() => {
    const seen = [];
    window.__greens = seen;
    const look = () => {
      for (const element of document.querySelectorAll('[data-task][data-state="succeeded"]')) {
        if (!seen.includes(element.dataset.task)) seen.push(element.dataset.task);
      }
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true });
    look();
  });
}

test("an operator follows, mends and rolls back deployments", async () => {
  const page = await newPage();
  await page.goto("/ui/");
  await page.getByLabel("API token").waitFor();
  await assertAccessible(page, "the sign-in page");
  await shot(page, "01-sign-in");

  // A deployment held at each step, so that the test sees it run.
  for (const gate of ["build-api", "deploy-api", "deploy-web"]) site.hold(gate);
  const first = await site.submit(1);
  await signIn(page, site.tokens.acme);
  await page.getByRole("link", { name: "shop" }).click();
  await page.getByRole("link", { name: first.id }).click();
  await waitTask(page, "build:api", "running");
  await recordGreens(page);
  await page.locator('[data-connection="live"]').waitFor();
  // The waiting task says why it waits; the keyboard opens it.
  await node(page, "deploy:web").focus();
  await page.keyboard.press("Enter");
  await page.getByText("Why it waits: waiting for build:api, deploy:api (needs)").waitFor();
  await assertAccessible(page, "a running deployment");
  await shot(page, "02-deployment-running");

  site.release("build-api");
  await waitTask(page, "build:api", "succeeded");
  await waitTask(page, "deploy:api", "running");
  assert.equal(await node(page, "deploy:web").getAttribute("data-state"), "blocked");
  await shot(page, "03-build-done");
  site.release("deploy-api");
  await waitTask(page, "deploy:api", "succeeded");
  await waitTask(page, "deploy:web", "running");
  // Its log streams while it runs.
  await page.getByLabel("Log of deploy:web").getByText("deploying web").waitFor();
  site.release("deploy-web");
  await waitTask(page, "deploy:web", "succeeded");
  await page.locator(".deployment-header [data-state=succeeded]").waitFor();
  assert.deepEqual(await page.evaluate(() => window.__greens), ["build:api", "deploy:api", "deploy:web"]);
  await shot(page, "04-deployment-succeeded");

  // A failing step: its log says why; retried once mended, it succeeds.
  site.hold("fail-web");
  const second = await site.submit(2);
  await page.goto(`/ui/#/apps/shop`);
  await page.getByRole("link", { name: second.id }).click();
  await waitTask(page, "deploy:web", "failed");
  await page.locator(".deployment-header [data-state=failed]").waitFor();
  await node(page, "deploy:web").click();
  await page.getByLabel("Log of deploy:web").getByText("boom: web did not start").waitFor();
  await shot(page, "05-failed-task-log");
  site.release("fail-web");
  await page.getByRole("button", { name: "Retry failed tasks" }).click();
  await waitTask(page, "deploy:web", "succeeded");
  await page.locator(".deployment-header [data-state=succeeded]").waitFor();
  await shot(page, "06-retried");

  // Roll back to release 1, confirmed in a dialog.
  await page.goto(`/ui/#/apps/shop`);
  await page.getByText("Active release: 2.").waitFor();
  await page.getByRole("button", { name: "Roll back to release 1" }).click();
  await page.getByRole("dialog").waitFor();
  await assertAccessible(page, "the rollback dialog");
  await shot(page, "07-rollback-confirm");
  await page.getByRole("dialog").getByRole("button", { name: "Roll back to release 1" }).click();
  await page.waitForURL(/#\/deployments\//);
  await page.locator(".deployment-header [data-state=succeeded]").waitFor();
  const rollbackId = page.url().split("/deployments/")[1];
  assert.notEqual(rollbackId, second.id);
  const app = await site.api("GET", "/v1/apps/shop");
  await page.goto(`/ui/#/apps/shop`);
  await page.getByText(`Active release: ${app.active_release}.`).waitFor();
  assert.equal((await site.api("GET", `/v1/deployments/${rollbackId}`)).state, "succeeded");
  await assertAccessible(page, "an app");
  await shot(page, "08-rolled-back");

  // Cancelled while its build runs, confirmed in a dialog: the step is stopped.
  site.hold("build-api");
  const third = await site.submit(3);
  await page.goto(`/ui/#/deployments/${third.id}`);
  await waitTask(page, "build:api", "running");
  await page.getByRole("button", { name: "Cancel deployment" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Cancel deployment" }).click();
  await page.locator(".deployment-header [data-state=cancelled]").waitFor();
  assert.equal(await node(page, "deploy:web").getAttribute("data-state"), "cancelled");
  site.release("build-api");
  await shot(page, "09-cancelled");

  // The audit trail holds each of these.
  await page.getByRole("link", { name: "Audit trail" }).click();
  await page.getByRole("row", { name: /deployment\.retried/ }).waitFor();
  await page.getByRole("row", { name: /release\.rolled_back/ }).first().waitFor();
  await page.getByRole("row", { name: /deployment\.cancelled/ }).waitFor();
  await shot(page, "10-audit");

  // At a phone's width the page does not overflow sideways.
  const phone = await newPage(site.base, { width: 390, height: 844 });
  await signIn(phone, site.tokens.acme);
  await phone.getByRole("link", { name: "shop" }).waitFor();
  await phone.goto(`/ui/#/deployments/${first.id}`);
  await waitTask(phone, "deploy:web", "succeeded");
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await assertAccessible(phone, "a deployment on a phone");
  await shot(phone, "11-phone");
  assert.deepEqual([...page.errors, ...phone.errors], [], "no script error");
});

test("an invalid token, another tenant's deployment and a network drop each say what happened", async () => {
  site.releaseAll();
  const page = await newPage();
  await signIn(page, "drover_not-a-token");
  await page.getByRole("alert").getByText("That token was refused").waitFor();
  assert.equal(await page.getByRole("link", { name: "Apps" }).count(), 0, "still signed out");
  await shot(page, "12-invalid-token");

  const acmes = await site.submit(4);
  await site.waitState(acmes.id, "succeeded");
  await signIn(page, site.tokens.other);
  await page.getByText("No app has been deployed yet.").waitFor();
  await page.goto(`/ui/#/deployments/${acmes.id}`);
  const alert = page.getByRole("alert");
  await alert.getByText(`Deployment ${acmes.id} was not found`).waitFor();
  assert.match(await alert.textContent(), /another tenant/);
  await shot(page, "13-another-tenants-deployment");

  // The network drops while a deployment runs: the page says so, reconnects, and
  // shows what happened meanwhile.
  const proxy = await Proxy.start(site.port);
  try {
    site.hold("build-api");
    const held = await site.submit(5);
    const viaProxy = await newPage(proxy.base);
    await signIn(viaProxy, site.tokens.acme);
    await viaProxy.getByRole("link", { name: "shop" }).waitFor();
    await viaProxy.goto(`/ui/#/deployments/${held.id}`);
    await waitTask(viaProxy, "build:api", "running");
    await viaProxy.locator('[data-connection="live"]').waitFor();
    proxy.cut();
    await viaProxy.getByText("Connection lost — reconnecting…").waitFor();
    await shot(viaProxy, "14-connection-lost");
    site.release("build-api");
    await site.waitState(held.id, "succeeded");
    proxy.restore();
    await waitTask(viaProxy, "deploy:web", "succeeded");
    await eventually("the page to say it is live or done", async () => {
      const state = await viaProxy.locator("[data-connection]").getAttribute("data-connection", { timeout: 100 }).catch(() => null);
      return state === null || state === "live";
    });
    await viaProxy.locator(".deployment-header [data-state=succeeded]").waitFor();
    await shot(viaProxy, "15-reconnected");
    assert.deepEqual([...page.errors, ...viaProxy.errors], [], "no script error");
  } finally {
    site.release("build-api");
    await proxy.stop();
  }
});
