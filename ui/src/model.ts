// The API's JSON, as far as the dashboard reads it (see /openapi.json).

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
  total: number;
}

export interface App {
  name: string;
  created_at: string;
  active_release: number | null;
  concurrency: string;
  strategy: string;
  deployments: number;
}

export type Waiting =
  | { reason: "needs"; tasks: string[] }
  | { reason: "lock"; deployment: string; task: string }
  | { reason: "order"; deployment: string; task: string }
  | { reason: "retry-backoff"; until: string }
  | { reason: "queued"; tenant_running: number; tenant_weight: number }
  | { reason: "tenant-limit"; running: number; limit: number };

export interface Task {
  id: string;
  kind: string;
  component: string;
  state: string;
  attempts: number;
  needs: string[];
  started_at: string | null;
  finished_at: string | null;
  artifact: string | null;
  error: string | null;
  log: string | null;
  waiting: Waiting | null;
  phase: string | null;
}

export interface Deployment {
  id: string;
  app: string;
  state: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  release: { version: number } | null;
  rolled_back_by?: string | null;
  plan?: { stages: string[][] };
  tasks?: Task[];
}

export interface Release {
  app: string;
  version: number;
  deployment: string;
  created_at: string;
  components: Record<string, { version: string }>;
}

export interface AuditEntry {
  id: string;
  at: string;
  token: string | null;
  action: string;
  target: string | null;
}

/** Why a task waits, for people (as `drover status` says it). */
export function waitingText(waiting: Waiting): string {
  switch (waiting.reason) {
    case "needs":
      return `waiting for ${waiting.tasks.join(", ")} (needs)`;
    case "order":
      return `waiting for ${waiting.task} of deployment ${waiting.deployment}, submitted earlier (order)`;
    case "lock":
      return `waiting for the component's lock, held by deployment ${waiting.deployment} (${waiting.task})`;
    case "retry-backoff":
      return `waiting to retry at ${time(waiting.until)} (retry-backoff)`;
    case "tenant-limit":
      return `waiting its turn: the tenant already has ${waiting.running} tasks running or dispatched, its limit is ${waiting.limit} (tenant-limit)`;
    case "queued":
      return "waiting for a free worker (queued)";
  }
}

export function time(at: string | null): string {
  if (!at) return "—";
  return new Date(at).toLocaleString();
}

export function terminal(state: string): boolean {
  return !["pending", "running"].includes(state);
}
