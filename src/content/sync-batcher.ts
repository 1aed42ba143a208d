// Group commit for directory fsyncs: commits that rename into the same directory at about the
// same time share one fsync of it, so N concurrent commits cost a few directory fsyncs, not N.

/** A commit's place in the next round; take it before fsyncing the file, so the round waits. */
export interface SyncTicket {
  /** Resolves once a directory fsync that started after this call has finished. */
  sync(): Promise<void>;
  /** The commit will not ask after all (it failed before its rename). */
  cancel(): void;
}

export interface SyncBatcherOptions {
  /** Longest a round waits for commits still fsyncing their files; 0 never waits. */
  maxDelayMs?: number;
}

/**
 * A round starts when every ticket taken has asked (or been cancelled), or `maxDelayMs` after
 * its first request, whichever is first; requests arriving while it runs wait for the next.
 * A caller asks only after its rename completed, so the fsync covering it saw the rename.
 */
export class SyncBatcher {
  private waiting: Array<{ resolve: () => void; reject: (err: unknown) => void }> = [];
  /** Tickets taken that have neither asked nor been cancelled. */
  private outstanding = 0;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private rounds = 0;
  private requests = 0;
  private readonly maxDelayMs: number;

  constructor(
    private readonly syncOnce: () => Promise<void>,
    opts: SyncBatcherOptions = {},
  ) {
    this.maxDelayMs = opts.maxDelayMs ?? 0;
  }

  ticket(): SyncTicket {
    this.outstanding++;
    let used = false;
    const use = () => {
      if (used) throw new Error("sync ticket used twice");
      used = true;
      this.outstanding--;
    };
    return {
      sync: () => {
        use();
        return this.request();
      },
      cancel: () => {
        if (used) return;
        use();
        this.schedule();
      },
    };
  }

  /** A sync without a ticket: joins the next round. */
  sync(): Promise<void> {
    return this.request();
  }

  /** How many directory fsyncs ran for how many requests (for benchmarks and tests). */
  get stats(): { rounds: number; requests: number } {
    return { rounds: this.rounds, requests: this.requests };
  }

  private request(): Promise<void> {
    this.requests++;
    const done = new Promise<void>((resolve, reject) => this.waiting.push({ resolve, reject }));
    this.schedule();
    return done;
  }

  private schedule(): void {
    if (this.running || this.waiting.length === 0) return;
    if (this.outstanding === 0 || this.maxDelayMs === 0) {
      // Everyone expected has asked; one macrotask still gathers same-turn requests.
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      this.immediate ??= setImmediate(() => void this.flush());
    } else {
      this.timer ??= setTimeout(() => void this.flush(), this.maxDelayMs);
    }
  }

  private async flush(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    if (this.running || this.waiting.length === 0) return;
    this.running = true;
    const batch = this.waiting;
    this.waiting = [];
    this.rounds++;
    try {
      await this.syncOnce();
      for (const w of batch) w.resolve();
    } catch (err) {
      for (const w of batch) w.reject(err);
    } finally {
      this.running = false;
      this.schedule();
    }
  }
}
