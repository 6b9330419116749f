// drover's HTTP API as the dashboard uses it: the token kept in session storage,
// JSON requests, and Server-Sent Events read with fetch (EventSource cannot send
// an Authorization header), reconnecting with Last-Event-ID.

const TOKEN_KEY = "drover.token";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, value);
}

/** An answer other than 2xx (`status` 0: the API did not answer at all). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const value = token();
  return value ? { Authorization: `Bearer ${value}`, ...extra } : extra;
}

async function failure(response: Response): Promise<ApiError> {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, "http", `${response.status} ${response.statusText}`);
  }
}

async function send(method: string, path: string, extra?: Record<string, string>): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, { method, headers: headers(extra) });
  } catch {
    throw new ApiError(0, "unreachable", "drover's API did not answer");
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function get<T>(path: string): Promise<T> {
  return (await send("GET", path)).json();
}

export async function text(path: string): Promise<string> {
  return (await send("GET", path)).text();
}

export async function post<T>(path: string, extra?: Record<string, string>): Promise<T> {
  return (await send("POST", path, extra)).json();
}

/** A fresh idempotency key (crypto.randomUUID needs a secure context). */
export function idempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export type Connection = "connecting" | "live" | "reconnecting" | "ended";

export interface Follow {
  /** Each event, in order; `end` is the stream's last. */
  onEvent(name: string, data: unknown): void;
  onConnection(state: Connection): void;
  /** A refusal that reconnecting cannot mend (401, 403, 404). */
  onRefused(error: ApiError): void;
}

/**
 * Follows the event stream at `path` until its `end` event or `stop()`. A dropped
 * connection is retried after 0.5 s, then up to every 5 s, sending the last event's
 * id so that the server sends what followed, and nothing twice.
 */
export function follow(path: string, handlers: Follow): () => void {
  const abort = new AbortController();
  let lastId: string | null = null;
  let ended = false;

  async function connectOnce(): Promise<void> {
    const extra: Record<string, string> = { Accept: "text/event-stream" };
    if (lastId !== null) extra["Last-Event-ID"] = lastId;
    const response = await fetch(path, { headers: headers(extra), signal: abort.signal });
    if (!response.ok) {
      const error = await failure(response);
      if (response.status < 500 && response.status !== 429) {
        ended = true;
        handlers.onRefused(error);
      }
      return;
    }
    handlers.onConnection("live");
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut: number;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        dispatch(block);
        if (ended) return;
      }
    }
  }

  function dispatch(block: string): void {
    let name = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "id") lastId = value;
    }
    if (data.length === 0) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      parsed = data.join("\n");
    }
    if (name === "end") ended = true;
    handlers.onEvent(name, parsed);
  }

  (async () => {
    let wait = 500;
    handlers.onConnection("connecting");
    while (!abort.signal.aborted && !ended) {
      try {
        await connectOnce();
        wait = 500;
      } catch {
        // A dropped or refused connection: try again below.
      }
      if (abort.signal.aborted) return;
      if (ended) break;
      handlers.onConnection("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 5000);
    }
    if (!abort.signal.aborted) handlers.onConnection("ended");
  })();
  return () => abort.abort();
}
