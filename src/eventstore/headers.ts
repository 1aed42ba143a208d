// A NATS message's header block (`NATS/1.0[ status]` line, then `Key: value` lines) read as
// text: the first value of each key, keys as written, values trimmed. Shared by the log's
// reader (log.ts, from nats.js's raw bytes) and the bulk reader (pull-reader.ts, from the
// socket's); free of nats.js, so the worker thread need not load it.

/** The headers of a header block's text. No prototype: "toString" is a header like any other. */
export function parseHeaderBlock(text: string): Record<string, string> {
  const headers = Object.create(null) as Record<string, string>;
  const lines = text.split("\r\n");
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const idx = line.indexOf(":");
    if (idx < 0) continue;
    const k = line.slice(0, idx);
    if (!(k in headers)) headers[k] = line.slice(idx + 1).trim();
  }
  return headers;
}
