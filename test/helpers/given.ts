// An in-memory projection for given/when/then tests of decide functions: applies events with
// the real evolve, checks that keysFor lists every key evolve reads or changes, and serves as
// the StateView a handler decides on.
import assert from "node:assert/strict";
import { evolve, keysFor, type LoggedEvent, type Timestamp } from "../../src/projections/views.js";
import type { EventDraft } from "../../src/emitter/envelope.js";
import type { KeyChange } from "../../src/projections/db.js";
import type { StateView } from "../../src/commands/sequencer.js";

export const T0: Timestamp = { seconds: 1_700_000_000, nanos: 0 };

export class Given implements StateView {
  state = new Map<string, unknown>();
  seq = 0;

  constructor(private readonly timestamp: Timestamp = T0) {}

  /** Folds one decided event into the state; returns the key changes. */
  apply(draft: EventDraft | undefined): KeyChange[] {
    if (!draft) return [];
    return this.fold({ seq: ++this.seq, namespace: draft.namespace, topic: draft.topic, timestamp: draft.timestamp ?? this.timestamp, typeName: draft.typeName, payload: draft.payload });
  }

  /** Folds one event as read from the log (decoded from its stored bytes) into the state. */
  fold(ev: LoggedEvent): KeyChange[] {
    const listed = new Set(keysFor(ev));
    const changes = evolve(ev, (k) => {
      assert.ok(listed.has(k), `evolve read ${k} not listed by keysFor`);
      return this.state.get(k);
    });
    for (const [k, v] of changes) {
      assert.ok(listed.has(k), `evolve changed ${k} not listed by keysFor`);
      if (v === undefined) this.state.delete(k);
      else this.state.set(k, v);
    }
    return changes;
  }

  /** Decides on this state (a synchronous handler) and applies the event. */
  run<T>(decide: (v: StateView) => { event?: EventDraft; result: T } | Promise<unknown>): T {
    const d = decide(this) as { event?: EventDraft; result: T };
    this.apply(d.event);
    return d.result;
  }

  get<T>(key: string): T | undefined {
    return this.state.get(key) as T | undefined;
  }

  async hasAny(prefixes: readonly string[]): Promise<boolean> {
    return [...this.state.keys()].some((k) => prefixes.some((p) => k.startsWith(p)));
  }

  /** Records under a prefix, in key order. */
  scan<T>(prefix: string): [string, T][] {
    return [...this.state.entries()].filter(([k]) => k.startsWith(prefix)).sort((a, b) => (a[0] < b[0] ? -1 : 1)) as [string, T][];
  }
}
