// The part of @nxtedition/rocksdb (an abstract-level store over RocksDB 9.7) that ck uses.
declare module "@nxtedition/rocksdb" {
  type Enc = "utf8" | "buffer" | "view";
  interface ReadOptions {
    keyEncoding?: Enc;
    valueEncoding?: Enc;
  }
  interface IteratorOptions extends ReadOptions {
    gt?: string;
    gte?: string;
    lt?: string;
    lte?: string;
    limit?: number;
    keys?: boolean;
    values?: boolean;
    reverse?: boolean;
  }
  type BatchOp = { type: "put"; key: string; value: Buffer | string } | { type: "del"; key: string };
  interface RocksIterator {
    nextv(size: number): Promise<[string, any][]>;
    close(): Promise<void>;
  }
  export class RocksLevel {
    constructor(location: string, options?: object);
    open(options?: { createIfMissing?: boolean; readOnly?: boolean; infoLogLevel?: string | null }): Promise<void>;
    close(): Promise<void>;
    getMany(keys: string[], options?: ReadOptions): Promise<(any | undefined)[]>;
    batch(ops: BatchOp[], options?: { sync?: boolean } & ReadOptions): Promise<void>;
    iterator(options?: IteratorOptions): RocksIterator;
  }
}
