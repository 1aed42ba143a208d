// Bases across projection formats. A base is the projection's records in the format of the ck
// that took it (PROJECTION_FORMAT); once the log's history before it is cut, that base is the
// only way to the state. A ck whose format differs could not start from it, so an upgrade that
// changes the format would strand every compacted log. Each change of the format therefore
// comes with a migration from the format before: a function from one record (key and decoded
// value) of format N to the records of format N+1 it becomes (none: dropped; several: split).
// Loading a base of an older format runs its records through the chain of migrations up to
// the current one (base.ts), so the rebuild goes on from there as if the base had been taken
// by this ck. A migration must give exactly the records a fold in the new format would have
// written (the same record builders, the same key layout). `ck-replay verify` cannot check
// that (once the history is cut its rebuild starts from the same base), so each migration
// comes with a test: records of the old format, migrated, equal a fold of the same events in
// the new format. FIRST_BASE_FORMAT never changes: bases of it may be stored anywhere.
//
// The chain is per record: a format change that needs more than one record at a time (a
// new index over many records, say) is not expressible here and needs the history kept.

/** The first format bases were taken in: nothing older needs a migration. */
export const FIRST_BASE_FORMAT = 2;

export interface FormatMigration {
  /** The records of format `from + 1` that one record of format `from` becomes. */
  record(key: string, value: unknown): Array<[key: string, value: unknown]>;
}

/**
 * Migrations by the format they start from (N to N+1). Empty while PROJECTION_FORMAT is the
 * first format bases were taken in; test/unit/migrations.test.ts fails once the format moves
 * on without one.
 */
export const MIGRATIONS: ReadonlyMap<number, FormatMigration> = new Map();

/** The migrations from format `from` to `to`, in order; undefined when one is missing (or `from` is newer). */
export function migrationChain(from: number, to: number, table: ReadonlyMap<number, FormatMigration> = MIGRATIONS): FormatMigration[] | undefined {
  if (!Number.isSafeInteger(from) || from > to) return undefined;
  const chain: FormatMigration[] = [];
  for (let f = from; f < to; f++) {
    const m = table.get(f);
    if (!m) return undefined;
    chain.push(m);
  }
  return chain;
}

/** One record through a chain of migrations. */
export function migrateRecord(chain: readonly FormatMigration[], key: string, value: unknown): Array<[string, unknown]> {
  let records: Array<[string, unknown]> = [[key, value]];
  for (const m of chain) records = records.flatMap(([k, v]) => m.record(k, v));
  return records;
}
