// A live `drover serve` on the embedded default for the browser tests: its own
// directory, config, tenants and step scripts, which wait while a gate file
// exists (so that a test decides when each step ends) and fail on a marker.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, chmodSync, existsSync, openSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";

const DEADLINE_MS = 30_000;

export function drover() {
  const bin = process.env.DROVER_BIN;
  if (!bin || !existsSync(bin)) {
    throw new Error("set DROVER_BIN to a built drover binary (scripts/ui-test does)");
  }
  return bin;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function eventually(what, check, deadline = DEADLINE_MS) {
  const end = Date.now() + deadline;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The app `shop`: api (built), web (reusing api's build, waiting for api). */
export function manifest(version) {
  return `config-version: 0.1
components:
  api:
    description: the shop's api
    type: continuous
    build:
      repository: https://example.org/shop
      ref: main
    build-id: v${version}
    run: {command: serve-api, port: 8000}
  web:
    description: the shop's web front
    type: continuous
    build: {reuse-from: api}
    run: {command: serve-web, port: 8080}
    wait-for: [api]
`;
}

export class Site {
  static async start() {
    const site = new Site();
    site.dir = mkdtempSync(path.join(tmpdir(), "drover-ui-"));
    site.gates = path.join(site.dir, "gates");
    mkdirSync(site.gates);
    mkdirSync(path.join(site.dir, "steps"));
    const script = (body) => `#!/bin/sh\nset -eu\n${body}`;
    const build = path.join(site.dir, "steps", "build.sh");
    writeFileSync(
      build,
      script(`echo "building $DROVER_COMPONENT $DROVER_VERSION"
while [ -e "${site.gates}/build-$DROVER_COMPONENT" ]; do sleep 0.05; done
echo "artifact=file:///artifacts/$DROVER_COMPONENT-$DROVER_VERSION" >> "$DROVER_OUTPUT"
echo "built $DROVER_COMPONENT"
`),
    );
    const deploy = path.join(site.dir, "steps", "deploy.sh");
    writeFileSync(
      deploy,
      script(`echo "deploying $DROVER_COMPONENT"
while [ -e "${site.gates}/deploy-$DROVER_COMPONENT" ]; do sleep 0.05; done
if [ -e "${site.gates}/fail-$DROVER_COMPONENT" ]; then
    echo "boom: $DROVER_COMPONENT did not start"
    exit 1
fi
echo "deployed $DROVER_COMPONENT"
`),
    );
    chmodSync(build, 0o755);
    chmodSync(deploy, 0o755);
    site.config = path.join(site.dir, "drover.toml");
    writeFileSync(
      site.config,
      `[driver]\nkind = "exec"\n\n[driver.exec]\nbuild = ["./steps/build.sh"]\ndeploy = ["./steps/deploy.sh"]\n`,
    );
    site.tokens = {};
    for (const tenant of ["acme", "other"]) {
      const out = site.run(["tenant", "create", tenant, "-o", "json"]);
      site.tokens[tenant] = JSON.parse(out).token;
    }
    site.port = await freePort();
    site.base = `http://127.0.0.1:${site.port}`;
    const log = openSync(path.join(site.dir, "serve.log"), "w");
    site.server = spawn(
      drover(),
      ["--config", site.config, "--data-dir", path.join(site.dir, "data"), "serve", "--listen", `127.0.0.1:${site.port}`],
      { stdio: ["ignore", log, log], env: { ...process.env, DROVER_LOG: "info" } },
    );
    await eventually("drover serve to answer /readyz", async () => (await fetch(`${site.base}/readyz`)).ok);
    return site;
  }

  run(args) {
    return execFileSync(drover(), ["--config", this.config, "--data-dir", path.join(this.dir, "data"), ...args], {
      encoding: "utf8",
    });
  }

  hold(gate) {
    writeFileSync(path.join(this.gates, gate), "");
  }

  release(gate) {
    rmSync(path.join(this.gates, gate), { force: true });
  }

  /** Lets every held step go (what an earlier test held). */
  releaseAll() {
    for (const gate of readdirSync(this.gates)) this.release(gate);
  }

  async api(method, route, { tenant = "acme", body, headers = {} } = {}) {
    const response = await fetch(`${this.base}${route}`, {
      method,
      body,
      headers: { Authorization: `Bearer ${this.tokens[tenant]}`, ...headers },
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return JSON.parse(text);
  }

  /** Submits the shop at `version`; returns the deployment. */
  async submit(version) {
    return this.api("POST", "/v1/apps/shop/deployments", { body: manifest(version) });
  }

  async waitState(id, state) {
    return eventually(`deployment ${id} to be ${state}`, async () => {
      const deployment = await this.api("GET", `/v1/deployments/${id}`);
      return deployment.state === state && deployment;
    });
  }

  async stop() {
    if (this.server && this.server.exitCode === null) {
      const exited = new Promise((resolve) => this.server.once("exit", resolve));
      this.server.kill("SIGTERM");
      await exited;
    }
    if (process.env.KEEP_UI_SITE) console.log(`site kept in ${this.dir}`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy to `port` that a test can cut, as a network drop would: every open
 * connection is closed and new ones are refused until it is restored.
 */
export class Proxy {
  static async start(port) {
    const proxy = new Proxy();
    proxy.sockets = new Set();
    proxy.cutOff = false;
    proxy.server = net.createServer((client) => {
      if (proxy.cutOff) {
        client.destroy();
        return;
      }
      const upstream = net.connect(port, "127.0.0.1");
      for (const socket of [client, upstream]) {
        proxy.sockets.add(socket);
        socket.on("close", () => proxy.sockets.delete(socket));
        socket.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    proxy.base = `http://127.0.0.1:${proxy.server.address().port}`;
    return proxy;
  }

  cut() {
    this.cutOff = true;
    for (const socket of this.sockets) socket.destroy();
  }

  restore() {
    this.cutOff = false;
  }

  async stop() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
