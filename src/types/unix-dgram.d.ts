// The part of unix-dgram (AF_UNIX datagram sockets, which Node's dgram lacks) that ck uses:
// sd_notify's messages to systemd, and the tests' stand-in for systemd's socket.
declare module "unix-dgram" {
  import type { EventEmitter } from "node:events";
  interface UnixDgramSocket extends EventEmitter {
    /** Binds to `path`; a failure is emitted as 'error', not thrown. */
    bind(path: string): void;
    /**
     * Sends to `path` (sendto on an unbound, unconnected socket); the callback gets an error
     * whose errno and code are the negative errno (-11: the receiver's queue is full).
     */
    send(buf: Buffer, offset: number, length: number, path: string, callback?: (err?: Error & { errno?: number; code?: number }) => void): void;
    close(): void;
    on(event: "message", listener: (buf: Buffer) => void): this;
    on(event: "error", listener: (err: Error) => void): this;
    on(event: string, listener: (...args: any[]) => void): this;
  }
  export function createSocket(type: "unix_dgram", listener?: (buf: Buffer) => void): UnixDgramSocket;
}
