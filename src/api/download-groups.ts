// Download slots shared by the requests of one download group: the Fetch.Blob calls of one
// client's fetch name the same group, and at most the group's limit of them download at a
// time. The limit lives here rather than in the client so that a client can ask about every
// object of an image at once: those the namespace or the store already has are answered
// without a slot (a warm pull's objects no longer queue behind each other), and only real
// downloads wait. A group exists while it has holders or waiters.
import { Slots } from "../remotes/slots.js";

export class DownloadGroups {
  private readonly groups = new Map<string, Slots>();

  /**
   * Takes a slot of `key`'s group (made with limit `max` by its first request), calling
   * `onWait` once if it must wait; resolves with the slot's release. Rejects with Canceled
   * when `signal` aborts while waiting.
   */
  acquire(key: string, max: number, signal: AbortSignal, onWait?: () => void | Promise<void>): Promise<() => void> {
    let group = this.groups.get(key);
    if (!group) {
      const made: Slots = new Slots(Math.max(1, max), () => {
        if (this.groups.get(key) === made && made.idle) this.groups.delete(key);
      });
      this.groups.set(key, made);
      group = made;
    }
    return group.acquire(signal, onWait);
  }

  /** Groups with holders or waiters (for tests and introspection). */
  get size(): number {
    return this.groups.size;
  }
}
