// Which snapshot directories a sweep may remove: the one rule behind Snapshots.Cleanup and
// GC's sweep of directories no snapshot owns (SnapshotStore.sweepUnowned). A directory is
// made before the event that records it (store.ts), so "no record names it" is a reason to
// remove it only once the projection holds every event that could name it.
import { tempNameId } from "./storage.js";

/** What keeps a directory of `<root>/snapshots` from a sweep besides a record naming its id. */
export interface DirClaims {
  /** Whether some record names this id; asked right before each removal (a Prepare may record one meanwhile). */
  owned(id: string): boolean;
  /**
   * Ids no record may name yet that are nevertheless in use: directories being made or
   * removed right now, and those of appends whose outcome is unknown and that the sweep has
   * not read the log past (UnsettledIds).
   */
  claimed(): Iterable<string>;
}

/**
 * Whether a sweep keeps the entry `name` of `<root>/snapshots`: an id some record names, or a
 * claimed id's directory or one of its temporary names (`.new-<id>-…` while it is made,
 * `.rm-<id>-…` while it is removed; see storage.ts). Anything else is a leftover.
 */
export function keepSnapshotDir(name: string, c: DirClaims): boolean {
  if (c.owned(name)) return true;
  const id = tempNameId(name) ?? name;
  for (const claimed of c.claimed()) if (claimed === id) return true;
  return false;
}

/**
 * Ids of directories whose recording append failed with its outcome unknown (Unavailable: the
 * connection lost after it was sent, the server stalled): the event may be in the log, or
 * land there late, and a record naming a removed directory could not be mended. Each stays
 * claimed until a sweep that started after its append failed has seen the projection catch
 * up with the log: by then its record is there (the id is owned) or it never will be.
 */
export class UnsettledIds {
  private tick = 0;
  private readonly since = new Map<string, number>();

  /** The append recording `id` failed with its outcome unknown. */
  add(id: string): void {
    this.since.set(id, ++this.tick);
  }

  has(id: string): boolean {
    return this.since.has(id);
  }

  /** A sweep starts: the mark to pass to held() and settle() once the projection caught up. */
  mark(): number {
    return ++this.tick;
  }

  /** The ids a sweep from `mark` must keep: their appends failed after it started. */
  held(mark: number): string[] {
    return [...this.since].filter(([, t]) => t > mark).map(([id]) => id);
  }

  /** The projection caught up after `mark`: the ids unsettled before it are settled, recorded or not. */
  settle(mark: number): void {
    for (const [id, t] of this.since) if (t < mark) this.since.delete(id);
  }

  get size(): number {
    return this.since.size;
  }
}
