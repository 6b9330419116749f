// The line under the header that says how the page's connection to drover is.

import type { ApiError, Connection } from "./api";
import { h, replace } from "./dom";

/** The connection's state, for people, in the page's live region. */
export function announce(state: Connection | "refused", error?: ApiError): void {
  const region = document.getElementById("connection")!;
  const words: Record<string, [string, string]> = {
    connecting: ["Connecting to live progress…", "info"],
    live: ["Live: updates as it runs.", "ok"],
    reconnecting: ["Connection lost — reconnecting…", "warn"],
    ended: ["", ""],
    refused: [`Live progress refused: ${error?.message ?? ""}`, "error"],
  };
  const [message, tone] = words[state];
  replace(region, message ? h("p", { class: `connection ${tone}`, "data-connection": state }, message) : null);
}

