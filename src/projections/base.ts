// A base is a projection's records at one log sequence, kept in NATS (src/eventstore/base-store.ts)
// so that the log's history before it can be cut and a projection still be rebuilt: load the
// base, then fold the messages after it. The records go as they are in RocksDB (key, cbor
// bytes), bookkeeping keys aside, so a projection loaded from a base and folded on is byte for
// byte the one a fold from sequence 1 gives (ck-replay verify compares them). The bytes are
// the projection's format: a base of an older format is loaded through the migrations from it
// (migrations.ts), one of a format with no way here cannot start a rebuild.
//
// Framing of the records, one after the other across chunk boundaries:
//   u32 key length | key (UTF-8) | u32 value length | value        (lengths big-endian)
import { rename } from "node:fs/promises";
import type { BaseMarker, BaseStore } from "../eventstore/base-store.js";
import { ProjectionDb, META_PREFIX, PROJECTION_FORMAT, decodeValue, encodeValue, type LogIdentity } from "./db.js";
import { MIGRATIONS, migrateRecord, migrationChain, type FormatMigration } from "./migrations.js";

/** Frames records into chunks of exactly `chunkBytes` (the last one shorter). */
export function* frameRecords(records: Iterable<[string, Uint8Array]>, chunkBytes: number): Generator<Uint8Array> {
  let buf = Buffer.allocUnsafe(chunkBytes);
  let at = 0;
  const put = function* (bytes: Uint8Array): Generator<Uint8Array> {
    let off = 0;
    while (off < bytes.length) {
      const n = Math.min(bytes.length - off, chunkBytes - at);
      buf.set(bytes.subarray(off, off + n), at);
      at += n;
      off += n;
      if (at === chunkBytes) {
        yield buf;
        buf = Buffer.allocUnsafe(chunkBytes);
        at = 0;
      }
    }
  };
  const len = Buffer.alloc(4);
  for (const [key, value] of records) {
    const k = Buffer.from(key, "utf8");
    len.writeUInt32BE(k.length);
    yield* put(len);
    yield* put(k);
    len.writeUInt32BE(value.length);
    yield* put(len);
    yield* put(value);
  }
  if (at > 0) yield buf.subarray(0, at);
}

/**
 * Parses framed records from chunks as they come; `end()` fails on a record cut short. A
 * record longer than a chunk is joined once, when all of it is there (not once per chunk).
 */
export class RecordParser {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the record at the head of `pending` needs in all (0: not known yet). */
  private need = 0;

  push(chunk: Uint8Array): [string, Buffer][] {
    this.pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.pendingBytes += chunk.length;
    if (this.need > this.pendingBytes) return [];
    const b = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    const out: [string, Buffer][] = [];
    let at = 0;
    this.need = 0;
    for (;;) {
      if (b.length - at < 4) break;
      const kl = b.readUInt32BE(at);
      if (b.length - at < 8 + kl) {
        this.need = 8 + kl;
        break;
      }
      const vl = b.readUInt32BE(at + 4 + kl);
      if (b.length - at < 8 + kl + vl) {
        this.need = 8 + kl + vl;
        break;
      }
      const key = b.toString("utf8", at + 4, at + 4 + kl);
      // A copy: the chunk's memory is not kept alive by one small record.
      const value = Buffer.from(b.subarray(at + 8 + kl, at + 8 + kl + vl));
      out.push([key, value]);
      at += 8 + kl + vl;
    }
    const rest = b.subarray(at);
    this.pending = rest.length ? [Buffer.from(rest)] : [];
    this.pendingBytes = rest.length;
    return out;
  }

  end(): void {
    if (this.pendingBytes) throw new Error(`base ends inside a record (${this.pendingBytes} bytes left over)`);
  }
}

/** What a rebuild needs of a base: where the log now starts, where it must stop. */
export interface BaseWanted {
  /** The log's first sequence still stored. */
  firstSeq: number;
  identity: { stream: string; created: string };
  untilSeq?: number;
  untilTime?: Date;
  /** The format to load into (default PROJECTION_FORMAT). */
  format?: number;
  /** The migrations between formats (default MIGRATIONS). */
  migrations?: ReadonlyMap<number, FormatMigration>;
}

/**
 * The base a rebuild starts from when the log's history before `firstSeq` is gone: the latest
 * one of this log at or after `firstSeq - 1` (the messages after it are all there), not past
 * the point wanted, and of this format or one the migrations lead from. Pure: returns the
 * base, or why none will do.
 */
export function chooseBase(bases: readonly BaseMarker[], w: BaseWanted): { base: BaseMarker } | { error: string } {
  const format = w.format ?? PROJECTION_FORMAT;
  const ofLog = bases.filter((b) => b.stream === w.identity.stream && b.created === w.identity.created);
  const reaching = ofLog.filter((b) => b.seq >= w.firstSeq - 1);
  const inTime = reaching.filter((b) => (w.untilSeq === undefined || b.seq <= w.untilSeq) && (w.untilTime === undefined || new Date(b.seqTime).getTime() <= w.untilTime.getTime()));
  const migrations = w.migrations ?? MIGRATIONS;
  const usable = inTime.filter((b) => b.format === format || migrationChain(b.format, format, migrations) !== undefined);
  const cut = `the log's history before sequence ${w.firstSeq} was compacted away`;
  // The latest; of two at one sequence, one in this format (nothing to migrate), then the one
  // written last.
  const better = (a: BaseMarker, b: BaseMarker) =>
    b.seq !== a.seq ? b.seq > a.seq : (b.format === format) !== (a.format === format) ? b.format === format : (b.markerSeq ?? 0) > (a.markerSeq ?? 0);
  if (usable.length) return { base: usable.reduce((a, b) => (better(a, b) ? b : a)) };
  if (inTime.length) {
    const formats = [...new Set(inTime.map((b) => b.format))];
    const newer = formats.some((f) => f > format) ? " (a newer format: written by a later ck)" : "";
    return {
      error: `${cut}, and its base${inTime.length > 1 ? "s are" : " is"} in projection format ${formats.join(", ")}${newer}; this ck reads format ${format} and has no migration from ${inTime.length > 1 ? "them" : "it"}`,
    };
  }
  if (reaching.length) {
    const earliest = reaching.reduce((a, b) => (b.seq < a.seq ? b : a));
    return { error: `${cut}: the earliest state it can show is at sequence ${earliest.seq} (${earliest.seqTime})` };
  }
  return { error: `${cut}, and no base of this log covers it (${bases.length} base${bases.length === 1 ? "" : "s"} stored)` };
}

/** Writes a projection's records as a base at its applied sequence. */
export async function takeBase(db: ProjectionDb, store: BaseStore, identity: LogIdentity, seqTime: Date): Promise<BaseMarker> {
  let records = 0;
  const all = function* (): Generator<[string, Uint8Array]> {
    for (const r of db.scanRaw("")) {
      if (r[0].startsWith(META_PREFIX)) continue;
      records++;
      yield r;
    }
  };
  const marker = await store.write(
    { seq: db.appliedSeq, seqTime: seqTime.toISOString(), stream: identity.stream, created: identity.created, format: PROJECTION_FORMAT },
    frameRecords(all(), store.chunkBytes),
    () => records,
  );
  return marker;
}

/**
 * Makes `location` a projection holding exactly the base's records at its sequence. The base
 * is loaded into a directory beside it (`<location>.loading`) and put in place only once all
 * of it is in and checked: a base that fails to load leaves `location` as it was, and a load
 * stopped half way is never taken for a projection.
 */
export async function loadBase(
  location: string,
  store: BaseStore,
  base: BaseMarker,
  identity: LogIdentity,
  /** Run on a directory before RocksDB makes its files there (its mode, say). */
  prepareDir?: (dir: string) => Promise<void>,
  into: { format?: number; migrations?: ReadonlyMap<number, FormatMigration> } = {},
): Promise<ProjectionDb> {
  const format = into.format ?? PROJECTION_FORMAT;
  const chain = migrationChain(base.format, format, into.migrations ?? MIGRATIONS);
  if (!chain) throw new Error(`base at sequence ${base.seq} is in projection format ${base.format}, and there is no migration from it to format ${format}`);
  // Keys the migrated records were written under: two records migrating to one key would
  // silently keep the last, and bookkeeping keys are not a migration's to write.
  const written = new Set<string>();
  const migrate = (records: [string, Buffer][]): [string, Buffer][] =>
    records.flatMap(([key, value]) => {
      try {
        return migrateRecord(chain, key, decodeValue(value)).map(([k, v]): [string, Buffer] => {
          if (k.startsWith(META_PREFIX)) throw new Error(`it gave a bookkeeping key (${JSON.stringify(k)})`);
          if (written.has(k)) throw new Error(`it gave the key ${JSON.stringify(k)} of another record`);
          written.add(k);
          return [k, encodeValue(v)];
        });
      } catch (err) {
        throw new Error(`base at sequence ${base.seq}: migrating record ${JSON.stringify(key)} from format ${base.format} to ${format}: ${(err as Error).message}`);
      }
    });
  const loading = `${location}.loading`;
  await ProjectionDb.destroy(loading);
  await prepareDir?.(loading);
  const db = await ProjectionDb.open(loading);
  try {
    const parser = new RecordParser();
    let pending: [string, Buffer][] = [];
    let records = 0;
    // A migration that fails stops the loading, but the chunks are still read to their end:
    // damaged bytes (the base's checksum, checked at its end) are told as such, not as the
    // migration's failure to read them.
    let failed: Error | undefined;
    const load = async (batch: [string, Buffer][], appliedSeq?: number) => {
      if (failed) return;
      try {
        await db.loadRaw(chain.length ? migrate(batch) : batch, appliedSeq);
      } catch (err) {
        failed = err as Error;
      }
    };
    for await (const chunk of store.chunks(base)) {
      for (const r of parser.push(chunk)) pending.push(r);
      if (pending.length >= 4096) {
        records += pending.length;
        await load(pending);
        pending = [];
      }
    }
    parser.end();
    records += pending.length;
    if (records !== base.records) throw new Error(`base at sequence ${base.seq} holds ${records} records, its marker says ${base.records}`);
    await load(pending, base.seq);
    if (failed) throw failed;
    await db.setLogIdentity({ ...identity, format });
    await db.close();
  } catch (err) {
    await db.close().catch(() => undefined);
    await ProjectionDb.destroy(loading);
    throw err;
  }
  // Swapped in: if this stops between the two steps, `location` is missing and the next
  // start loads the base again.
  await ProjectionDb.destroy(location);
  await rename(loading, location);
  return ProjectionDb.open(location);
}

/**
 * Loads the best base for `wanted` into `location`; a base that fails to load (damaged,
 * removed meanwhile) is passed over for the next best. Throws with every reason when none loads.
 */
export async function loadBestBase(
  location: string,
  store: BaseStore,
  wanted: BaseWanted,
  identity: LogIdentity,
  prepareDir?: (dir: string) => Promise<void>,
): Promise<{ db: ProjectionDb; base: BaseMarker; passedOver: string[] }> {
  let bases = await store.list();
  const passedOver: string[] = [];
  for (;;) {
    const chosen = chooseBase(bases, wanted);
    if ("error" in chosen) throw new Error(passedOver.length ? `${chosen.error}; passed over: ${passedOver.join("; ")}` : chosen.error);
    try {
      return { db: await loadBase(location, store, chosen.base, identity, prepareDir, wanted), base: chosen.base, passedOver };
    } catch (err) {
      passedOver.push((err as Error).message);
      bases = bases.filter((b) => b !== chosen.base);
    }
  }
}
