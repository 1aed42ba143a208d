// The three modules of undici that ck's registry client uses, loaded by path: undici's index
// loads all of undici (fetch, WebSocket, cookies, caches), ~100 ms of a short `ck` process's
// start against ~35 ms for these (2026-11-30, AMD EPYC). undici has no "exports" map, and its
// own typings describe them; package.json pins the minor version these paths come from.
declare module "undici/lib/dispatcher/agent.js" {
  import type { Agent } from "undici";
  const AgentClass: typeof Agent;
  export default AgentClass;
}
declare module "undici/lib/core/connect.js" {
  import type { buildConnector as build } from "undici";
  const buildConnector: typeof build;
  export default buildConnector;
}
declare module "undici/lib/api/api-request.js" {
  import type { Dispatcher } from "undici";
  /** Dispatcher.prototype.request, called with the dispatcher as `this`. */
  const request: (this: Dispatcher, opts: Dispatcher.RequestOptions<unknown>) => Promise<Dispatcher.ResponseData<unknown>>;
  export default request;
}
