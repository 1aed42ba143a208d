// The part of unix-dgram (AF_UNIX datagram sockets, which Node's dgram lacks) that ck uses:
// sd_notify's messages to systemd, and the tests' stand-in for systemd's socket.
declare module "unix-dgram" {
  import type { EventEmitter } from "node:events";
  interface UnixDgramSocket extends EventEmitter {
    bind(path: string): void;
    /** Sends to `path`; the callback gets an errno error, or one with code 1 on congestion. */
    send(buf: Buffer, offset: number, length: number, path: string, callback?: (err?: Error & { code?: string | number }) => void): void;
    close(): void;
    on(event: "message", listener: (buf: Buffer) => void): this;
    on(event: "error", listener: (err: Error) => void): this;
    on(event: string, listener: (...args: any[]) => void): this;
  }
  export function createSocket(type: "unix_dgram", listener?: (buf: Buffer) => void): UnixDgramSocket;
}
