// Download slots shared by the requests of one download group: the Fetch.Blob calls of one
// client's fetch name the same group, and at most the group's limit of them download at a
// time. The limit lives here rather than in the client so that a client can ask about every
// object of an image at once: those the namespace or the store already has are answered
// without a slot (a warm pull's objects no longer queue behind each other), and only real
// downloads wait. A group exists while it has holders or waiters.
import { canceled } from "../errdefs/errdefs.js";

interface Group {
  max: number;
  active: number;
  waiters: (() => void)[];
}

export class DownloadGroups {
  private readonly groups = new Map<string, Group>();

  /**
   * Takes a slot of `key`'s group (made with limit `max` by its first request), calling
   * `onWait` once if it must wait; resolves with the slot's release. Rejects with Canceled
   * when `signal` aborts while waiting.
   */
  async acquire(key: string, max: number, signal: AbortSignal, onWait?: () => void | Promise<void>): Promise<() => void> {
    let g = this.groups.get(key);
    if (!g) {
      g = { max: Math.max(1, max), active: 0, waiters: [] };
      this.groups.set(key, g);
    }
    const group = g;
    let told = false;
    while (group.active >= group.max) {
      if (!told) {
        told = true;
        await onWait?.();
        continue; // a slot may have come free meanwhile
      }
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          signal.removeEventListener("abort", stop);
          resolve();
        };
        const stop = () => {
          const i = group.waiters.indexOf(wake);
          if (i >= 0) group.waiters.splice(i, 1);
          this.forget(key, group);
          reject(canceled(`waiting for a download slot of group ${JSON.stringify(key)}`));
        };
        if (signal.aborted) return stop();
        group.waiters.push(wake);
        signal.addEventListener("abort", stop, { once: true });
      });
    }
    group.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      group.active--;
      const next = group.waiters.shift();
      if (next) next();
      else this.forget(key, group);
    };
  }

  /** Groups with holders or waiters (for tests and introspection). */
  get size(): number {
    return this.groups.size;
  }

  private forget(key: string, g: Group): void {
    if (g.active === 0 && g.waiters.length === 0 && this.groups.get(key) === g) this.groups.delete(key);
  }
}
