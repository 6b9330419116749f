// One deployment as a live DAG: tasks laid out by stage, `needs` as edges, each
// task's state as its colour and its word, kept live by the deployment's events;
// a task's detail (why it waits, its error, its log, streamed) beside it.

import { ApiError, follow, get, post, text } from "./api";
import { append, badge, confirmDialog, h, replace, svg } from "./dom";
import { announce } from "./status";
import type { Cleanup } from "./main";
import { showError } from "./main";
import type { Deployment, Task } from "./model";
import { terminal, time, waitingText } from "./model";

const NODE_W = 210;
const NODE_H = 52;
const GAP_X = 70;
const GAP_Y = 18;
const PAD = 12;

export async function deploymentView(main: HTMLElement, id: string, selected?: string): Promise<Cleanup> {
  let deployment = await get<Deployment>(`/v1/deployments/${encodeURIComponent(id)}`);
  let current = selected ?? null;
  let stopEvents: (() => void) | null = null;
  let stopLog: (() => void) | null = null;
  let refreshing: number | null = null;

  const header = h("div", { class: "deployment-header" });
  const graph = h("div", { class: "dag", role: "group", "aria-label": "Tasks, by stage" });
  const detail = h("aside", { class: "detail", "aria-live": "polite", "aria-label": "Task detail" });

  function tasks(): Task[] {
    return deployment.tasks ?? [];
  }

  function renderHeader(): void {
    const actions = h("div", { class: "actions" });
    if (!terminal(deployment.state)) {
      append(actions, h("button", { type: "button", class: "danger", onclick: () => void cancel() }, "Cancel deployment"));
    }
    if (deployment.state === "failed") {
      append(actions, h("button", { type: "button", onclick: () => void retry() }, "Retry failed tasks"));
    }
    replace(
      header,
      h("h1", {}, "Deployment ", h("code", {}, deployment.id)),
      h(
        "p",
        { class: "summary" },
        "App ",
        h("a", { href: `#/apps/${encodeURIComponent(deployment.app)}` }, deployment.app),
        " · ",
        badge(deployment.state),
        " · submitted ",
        time(deployment.created_at),
        deployment.release ? ` · release ${deployment.release.version}` : "",
        deployment.finished_at ? ` · ended ${time(deployment.finished_at)}` : "",
      ),
      actions,
    );
  }

  function renderGraph(): void {
    // The node the keyboard is on keeps the focus when the graph is drawn again.
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.task;
    const stages = deployment.plan?.stages ?? [tasks().map((task) => task.id)];
    const byId = new Map(tasks().map((task) => [task.id, task]));
    const position = new Map<string, { x: number; y: number }>();
    stages.forEach((stage, column) =>
      stage.forEach((taskId, row) =>
        position.set(taskId, { x: PAD + column * (NODE_W + GAP_X), y: PAD + row * (NODE_H + GAP_Y) }),
      ),
    );
    const rows = Math.max(1, ...stages.map((stage) => stage.length));
    const width = PAD * 2 + stages.length * NODE_W + Math.max(0, stages.length - 1) * GAP_X;
    const height = PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y;
    const edges = svg("svg", { width, height, class: "edges", "aria-hidden": "true" });
    for (const task of tasks()) {
      const to = position.get(task.id);
      if (!to) continue;
      for (const need of task.needs) {
        const from = position.get(need);
        if (!from) continue;
        const [x1, y1, x2, y2] = [from.x + NODE_W, from.y + NODE_H / 2, to.x, to.y + NODE_H / 2];
        const bend = (x2 - x1) / 2;
        edges.append(
          svg("path", {
            d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
            class: `edge from-${byId.get(need)?.state ?? "blocked"}`,
          }),
        );
      }
    }
    const canvas = h("div", { class: "canvas" });
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    canvas.append(edges);
    for (const task of tasks()) {
      const at = position.get(task.id);
      if (!at) continue;
      const node = h(
        "button",
        {
          type: "button",
          class: `node state-${task.state}${task.id === current ? " selected" : ""}`,
          "data-task": task.id,
          "data-state": task.state,
          "aria-pressed": task.id === current ? "true" : "false",
          onclick: () => select(task.id),
        },
        h("span", { class: "task-id" }, task.id),
        h("span", { class: "task-state" }, task.state + (task.attempts > 1 ? ` · attempt ${task.attempts}` : "")),
      );
      node.style.left = `${at.x}px`;
      node.style.top = `${at.y}px`;
      canvas.append(node);
    }
    replace(graph, canvas);
    if (focused) graph.querySelector<HTMLElement>(`[data-task="${CSS.escape(focused)}"]`)?.focus();
  }

  function renderDetail(): void {
    stopLog?.();
    stopLog = null;
    const task = tasks().find((candidate) => candidate.id === current);
    if (!task) {
      replace(detail, h("p", { class: "help" }, "Choose a task to see why it waits, its error and its log."));
      return;
    }
    const log = h("pre", { class: "log", tabindex: "0", "aria-label": `Log of ${task.id}` });
    const facts = h(
      "dl",
      {},
      h("dt", {}, "State"),
      h("dd", {}, badge(task.state)),
      h("dt", {}, "Attempts"),
      h("dd", {}, String(task.attempts)),
      h("dt", {}, "Started"),
      h("dd", {}, time(task.started_at)),
      h("dt", {}, "Ended"),
      h("dd", {}, time(task.finished_at)),
      task.phase ? h("dt", {}, "Phase") : null,
      task.phase ? h("dd", {}, task.phase) : null,
      task.artifact ? h("dt", {}, "Artifact") : null,
      task.artifact ? h("dd", {}, h("code", {}, task.artifact)) : null,
    );
    replace(
      detail,
      h("h2", {}, h("code", {}, task.id)),
      task.waiting ? h("p", { class: "waiting" }, "Why it waits: ", waitingText(task.waiting)) : null,
      task.error ? h("p", { class: "notice error task-error" }, task.error) : null,
      facts,
      h("h3", {}, "Log"),
      log,
    );
    showLog(task, log);
  }

  function showLog(task: Task, log: HTMLElement): void {
    const path = `/v1/deployments/${encodeURIComponent(deployment.id)}/tasks/${encodeURIComponent(task.id)}/logs`;
    if (task.state === "running") {
      log.textContent = "";
      stopLog = follow(`${path}?follow=true`, {
        onEvent(name, data) {
          if (name === "line") log.append(`${(data as { line: string }).line}\n`);
        },
        onConnection() {},
        onRefused(error) {
          log.textContent = `The log cannot be read: ${error.message}`;
        },
      });
    } else if (task.attempts === 0) {
      log.textContent = "It has not run yet.";
    } else {
      text(path)
        .then((body) => (log.textContent = body || "It printed nothing."))
        .catch((error) => (log.textContent = `The log cannot be read: ${error.message}`));
    }
  }

  function select(taskId: string): void {
    current = taskId;
    history.replaceState(null, "", `#/deployments/${deployment.id}/tasks/${encodeURIComponent(taskId)}`);
    renderGraph();
    renderDetail();
    graph.querySelector<HTMLElement>(`[data-task="${CSS.escape(taskId)}"]`)?.focus();
  }

  async function reload(): Promise<void> {
    const before = tasks().find((task) => task.id === current)?.state;
    deployment = await get<Deployment>(`/v1/deployments/${encodeURIComponent(deployment.id)}`);
    renderHeader();
    renderGraph();
    const after = tasks().find((task) => task.id === current)?.state;
    if (before !== after || !stopLog) renderDetail();
  }

  /** Reads the whole deployment again soon (why tasks wait, errors, the end). */
  function soon(): void {
    if (refreshing !== null) return;
    refreshing = window.setTimeout(() => {
      refreshing = null;
      reload().catch((error) => {
        // Without an answer, the page stays as it is: the event stream says the
        // connection is lost, and reads the deployment again once it is back.
        if (!(error instanceof ApiError && error.status === 0)) showError(error, `Deployment ${id}`);
      });
    }, 150);
  }

  function live(): void {
    stopEvents?.();
    stopEvents = follow(`/v1/deployments/${encodeURIComponent(deployment.id)}/events`, {
      onEvent(name, data) {
        if (name === "task") {
          const event = data as { task: string; state: string; attempt: number };
          const task = tasks().find((candidate) => candidate.id === event.task);
          if (task) {
            task.state = event.state;
            task.attempts = Math.max(task.attempts, event.attempt);
            renderGraph();
          }
        }
        soon();
      },
      onConnection: (state) => {
        announce(state);
        // What changed while it was away.
        if (state === "live") soon();
      },
      onRefused: (error) => announce("refused", error),
    });
  }

  async function cancel(): Promise<void> {
    if (!(await confirmDialog(`Cancel deployment ${deployment.id}? Pending tasks will not run; running steps are stopped.`, "Cancel deployment")))
      return;
    try {
      await post(`/v1/deployments/${encodeURIComponent(deployment.id)}/cancel`);
      await reload();
    } catch (error) {
      showError(error, `The cancellation of ${deployment.id}`);
    }
  }

  async function retry(): Promise<void> {
    try {
      await post(`/v1/deployments/${encodeURIComponent(deployment.id)}/retry`);
      await reload();
      live();
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        replace(detail, h("p", { class: "notice error", role: "alert" }, error.message));
      } else showError(error, `The retry of ${deployment.id}`);
    }
  }

  replace(
    main,
    header,
    h("div", { class: "deployment-body" }, h("section", { class: "graph", "aria-label": "DAG" }, graph), detail),
  );
  renderHeader();
  renderGraph();
  renderDetail();
  live();
  return () => {
    stopEvents?.();
    stopLog?.();
    if (refreshing !== null) clearTimeout(refreshing);
  };
}
