// A counting semaphore for downloads: at most `limit` holders at once; the others wait in
// turn. Each release is given back once however often it is called. The client's own
// download limit (a fetch without ckd's Fetch service) and ckd's download groups use it.
import { canceled } from "../errdefs/errdefs.js";

export class Slots {
  private active = 0;
  /** Callers told they must wait, still in their onWait. */
  private telling = 0;
  private readonly waiters: (() => void)[] = [];

  /** `onIdle` runs whenever the last holder or waiter leaves. */
  constructor(
    readonly limit: number,
    private readonly onIdle?: () => void,
  ) {}

  /** No holders and no waiters. */
  get idle(): boolean {
    return this.active === 0 && this.waiters.length === 0 && this.telling === 0;
  }

  /**
   * Resolves with the slot's release once one is free, calling `onWait` once first if it must
   * wait. Rejects with Canceled when `signal` aborts while waiting.
   */
  async acquire(signal?: AbortSignal, onWait?: () => void | Promise<void>): Promise<() => void> {
    let told = false;
    while (this.active >= this.limit) {
      if (!told) {
        told = true;
        // Counted meanwhile, so that the last holder leaving does not find the group idle.
        this.telling++;
        try {
          await onWait?.();
        } catch (err) {
          this.telling--;
          if (this.idle) this.onIdle?.();
          throw err;
        }
        this.telling--;
        continue; // a slot may have come free meanwhile
      }
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          signal?.removeEventListener("abort", stop);
          resolve();
        };
        const stop = () => {
          const i = this.waiters.indexOf(wake);
          if (i >= 0) this.waiters.splice(i, 1);
          if (this.idle) this.onIdle?.();
          reject(canceled("waiting for a download slot"));
        };
        if (signal?.aborted) return stop();
        this.waiters.push(wake);
        signal?.addEventListener("abort", stop, { once: true });
      });
    }
    this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      const next = this.waiters.shift();
      if (next) next();
      else if (this.idle) this.onIdle?.();
    };
  }
}
