// containerd's list and event filters: the syntax of containerd's filters package, parsed into
// OR-of-AND selectors and matched against records through adaptors that map a fieldpath to a
// value, exactly as containerd's metadata stores and event envelopes expose them.
//
// Grammar (one filter string; several strings are OR'ed, an empty string matches everything):
//
//   selectors := selector ("," selector)*
//   selector  := fieldpath (operator value)?       bare fieldpath: "the field is present"
//   fieldpath := field ("." field)*
//   field     := quoted | [A-Za-z0-9_]+
//   operator  := "==" | "!=" | "~="
//   value     := quoted | run of characters other than "," and whitespace
//   quoted    := "..." with Go escapes; for "~=" also /.../ or |...|
//
// Semantics follow containerd: `==` needs the field present and equal; `!=` compares the
// value even when absent (an absent field has value ""); `~=` searches the value (again ""
// when absent) with a Go RE2 expression (re2js: Go's syntax, linear-time matching). Unlike
// containerd, which compiles an expression only when it first matches and takes one it cannot
// compile as matching nothing, an invalid expression is refused here (InvalidArgument).
import { createRequire } from "node:module";
import type { RE2JS as RE2JSClass } from "re2js";
import { CkError, invalidArgument } from "../errdefs/errdefs.js";
import { isIdentifier } from "../commands/validation.js";

/** What an adaptor reports for one fieldpath; `present: false` means the object lacks it. */
export interface FieldValue {
  value: string;
  present: boolean;
}

/** containerd's filters.Adaptor: the value at a fieldpath of the object being filtered. */
export type Adaptor = (fieldpath: string[]) => FieldValue;

export type Operator = "present" | "==" | "!=" | "~=";

export interface Selector {
  /** Frozen: adaptors receive it as is and must not change it. */
  readonly fieldpath: string[];
  readonly operator: Operator;
  readonly value: string;
  /** The compiled expression of a `~=` selector. */
  readonly pattern?: Pattern;
}

/** A parsed filter: it matches when every selector of at least one branch matches. */
export class Filter {
  /** OR of branches, each an AND of selectors; a branch with no selectors matches anything. */
  readonly branches: readonly (readonly Selector[])[];

  constructor(branches: readonly (readonly Selector[])[]) {
    this.branches = branches;
  }

  match(adaptor: Adaptor): boolean {
    return this.branches.some((branch) => branch.every((s) => matchSelector(s, adaptor)));
  }
}

function matchSelector(s: Selector, adaptor: Adaptor): boolean {
  const { value, present } = adaptor(s.fieldpath);
  switch (s.operator) {
    case "present":
      return present;
    case "==":
      return present && value === s.value;
    case "!=":
      return value !== s.value;
    case "~=":
      return s.pattern!.test(value);
  }
}

/**
 * Parses the `filters` of a List or Subscribe request. No filters, or an empty string among
 * them, matches everything. Throws InvalidArgument naming the filter and the position.
 */
export function parseFilters(filters: readonly string[]): Filter {
  if (filters.length === 0) return new Filter([[]]);
  const budget = { left: MAX_REGEXP_BYTES };
  return new Filter(Object.freeze(filters.map((f) => Object.freeze(new Parser(f, budget).parse()))));
}

/**
 * The most bytes of `~=` expressions one request's filters may hold, together. Go compiles any
 * size, and so does containerd; re2js takes ~0.1-0.3 s to compile 64 KiB of expression and
 * ~1.6 s a MiB, on ckd's only thread, and a request may carry 16 MiB. No real filter comes
 * near it.
 */
export const MAX_REGEXP_BYTES = 64 << 10;

/**
 * The namespace every branch of `filter` pins with `namespace==<ns>`, if there is one: then
 * only that namespace's events can match, and a subscription may read just its subjects.
 * Branches that can never match (two different pinned values, or a value that is not a valid
 * namespace) do not prevent narrowing. Undefined when any branch leaves the namespace open.
 */
export function pinnedNamespace(filter: Filter): string | undefined {
  let pinned: string | undefined;
  for (const branch of filter.branches) {
    const values = new Set<string>();
    for (const s of branch) {
      if (s.operator === "==" && s.fieldpath.length === 1 && s.fieldpath[0] === "namespace") values.add(s.value);
    }
    if (values.size === 0) return undefined;
    const [only] = values;
    if (values.size > 1 || !isIdentifier(only)) continue;
    if (pinned !== undefined && pinned !== only) return undefined;
    pinned = only;
  }
  return pinned;
}

/**
 * parseFilters as containerd's metadata stores of images, containers and leases (and its
 * introspection service) call it: they wrap ParseAll's error in InvalidArgument once more
 * (`fmt.Errorf("%s: %w", err.Error(), errdefs.ErrInvalidArgument)`), so that ctr prints
 * `...: invalid argument: invalid argument`. Content, snapshots and tasks do not.
 */
export function parseFiltersRewrapped(filters: readonly string[]): Filter {
  try {
    return parseFilters(filters);
  } catch (err) {
    if (err instanceof CkError && err.errorClass === "InvalidArgument") throw invalidArgument(err.message);
    throw err;
  }
}

// ---- adaptors ----

const ABSENT: FieldValue = Object.freeze({ value: "", present: false });

/** A string field as containerd's adaptors report it: present when non-empty. */
const stringField = (s: string | undefined | null): FieldValue => (s ? { value: s, present: true } : ABSENT);

/**
 * A label map: the rest of the fieldpath, joined with `.`, is the key, so `labels.a.b` and
 * `labels."a.b"` both name the key `a.b`; keys with other punctuation need quoting:
 * `labels."example.com/owner"`.
 */
export function labelsAdaptor(labels: Readonly<Record<string, string>> | undefined | null): Adaptor {
  return (rest) => {
    if (!labels) return ABSENT;
    const key = rest.join(".");
    return Object.hasOwn(labels, key) ? { value: labels[key], present: true } : ABSENT;
  };
}

export interface NamespaceFields {
  name: string;
  labels?: Readonly<Record<string, string>>;
}

/**
 * Namespaces: `name`, `labels.<key>`. (containerd 1.6 ignores the filter of ListNamespaces;
 * ck applies it with these fields.)
 */
export function namespaceFieldpath(ns: NamespaceFields): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "name":
        return stringField(ns.name);
      case "labels":
        return labelsAdaptor(ns.labels)(fp.slice(1));
    }
    return ABSENT;
  };
}

export interface ImageFields {
  name: string;
  labels?: Readonly<Record<string, string>>;
  target?: { media_type?: string; digest?: string; annotations?: Readonly<Record<string, string>> } | null;
}

/**
 * Images, as containerd's metadata adaptImage: `name`, `target.digest`, `target.mediatype`
 * (so spelled), `labels.<key>`, `annotations.<key>` (the target's annotations).
 */
export function imageFieldpath(img: ImageFields): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "name":
        return stringField(img.name);
      case "target":
        if (fp[1] === "digest") return stringField(img.target?.digest);
        if (fp[1] === "mediatype") return stringField(img.target?.media_type);
        return ABSENT;
      case "labels":
        return labelsAdaptor(img.labels)(fp.slice(1));
      case "annotations":
        return labelsAdaptor(img.target?.annotations)(fp.slice(1));
    }
    return ABSENT;
  };
}

export interface ContainerFields {
  id: string;
  image?: string;
  runtime?: { name?: string } | null;
  labels?: Readonly<Record<string, string>>;
}

/**
 * Containers, as containerd's metadata adaptContainer: `id`, `image`, `runtime.name`,
 * `labels.<key>`. containerd exposes neither `snapshotter` nor `snapshot_key`, so neither
 * does ck: a filter on them behaves as on an absent field, as with containerd.
 */
export function containerFieldpath(c: ContainerFields): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "id":
        return stringField(c.id);
      case "image":
        return stringField(c.image);
      case "runtime":
        return fp[1] === "name" ? stringField(c.runtime?.name) : ABSENT;
      case "labels":
        return labelsAdaptor(c.labels)(fp.slice(1));
    }
    return ABSENT;
  };
}

/**
 * Content in a namespace, as containerd's content adaptor (AdaptInfo): `digest` and
 * `labels.<k>`. `size` is absent there (its adaptor leaves size filtering for later): `size==N`
 * matches no blob and `size!=N` every one, and so here, so a filter answers as containerd's.
 */
export function blobFieldpath(b: { digest: string; labels?: Readonly<Record<string, string>> }): Adaptor {
  const labels = labelsAdaptor(b.labels);
  return (fp) => {
    if (fp[0] === "digest") return { value: b.digest, present: true };
    if (fp[0] === "labels") return labels(fp.slice(1));
    return ABSENT;
  };
}

export interface EnvelopeFields {
  namespace: string;
  topic: string;
  /**
   * The decoded event as a plain object (proto field names, snake_case or camelCase), or a
   * function returning it, called at most once and only if a filter looks at `event.`.
   */
  event?: unknown;
}

/**
 * Event envelopes, as containerd's generated Envelope.Field: `namespace`, `topic`, and
 * `event.<field>...` looked up in the decoded event the way containerd's generated Field
 * methods do: strings (present when non-empty), booleans ("true"/"false"), `labels.<key>`,
 * nested messages; numbers, lists and timestamps are absent.
 */
export function envelopeFieldpath(env: EnvelopeFields): Adaptor {
  let resolved = false;
  let event: unknown;
  const decoded = () => {
    if (!resolved) {
      event = typeof env.event === "function" ? (env.event as () => unknown)() : env.event;
      resolved = true;
    }
    return event;
  };
  return (fp) => {
    switch (fp[0]) {
      case "namespace":
        return stringField(env.namespace);
      case "topic":
        return stringField(env.topic);
      case "event":
        return eventField(decoded(), fp.slice(1));
    }
    return ABSENT;
  };
}

const camelCase = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function messageField(obj: object, name: string): unknown {
  if (name in Object.prototype) return undefined; // never `constructor`, `__proto__`, ...
  const rec = obj as Record<string, unknown>;
  const v = rec[name];
  return v !== undefined ? v : rec[camelCase(name)];
}

const isMessage = (v: unknown): v is object =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v) && !(v instanceof Date);

function eventField(msg: unknown, fp: string[]): FieldValue {
  if (fp.length === 0 || !isMessage(msg)) return ABSENT;
  const [head, ...rest] = fp;
  const v = messageField(msg, head);
  if (head === "labels") {
    return isMessage(v) ? labelsAdaptor(v as Record<string, string>)(rest) : ABSENT;
  }
  if (typeof v === "string") return stringField(v);
  if (typeof v === "boolean") return { value: String(v), present: true };
  // A nested google.protobuf.Any (runtime options) would need decoding: not looked into.
  if (isMessage(v) && !("type_url" in v) && !("typeUrl" in v)) return eventField(v, rest);
  return ABSENT;
}

// ---- the parser ----

const QUOTES = new Set(["/", "|", '"']);
const OPERATOR_CHARS = new Set(["=", "!", "~"]);
const isFieldChar = (c: string) => /^[A-Za-z0-9_]$/.test(c);
/** Go's unicode.IsSpace. */
const isSpace = (c: string) => /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u.test(c);
/** Go's value runes: graphic, not space, not ",". */
const isValueChar = (c: string) => c !== "," && !isSpace(c) && /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(c);
/** Go's single-character escapes in quoted strings. */
const QUOTE_ESCAPES: Readonly<Record<string, number>> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, "\\": 92 };

type TokenKind = "eof" | "quoted" | "value" | "field" | "separator" | "operator" | "illegal" | "char";

interface Token {
  kind: TokenKind;
  pos: number;
  /** The text; for a quoted token, the decoded contents. */
  text: string;
  /** The quote character of a quoted token. */
  quote?: string;
  /** What is wrong with an illegal token. */
  problem?: string;
}

/** Tokens of one filter string. Positions are UTF-16 offsets into the string. */
class Scanner {
  private pos = 0;
  /** After an operator, the next token is a value. */
  private expectValue = false;

  constructor(private readonly input: string) {}

  /** The character right after the last token, whitespace included; undefined at the end. */
  peekChar(): string | undefined {
    return this.charAt(this.pos);
  }

  /** Where peekChar looks. */
  get offset(): number {
    return this.pos;
  }

  private charAt(i: number): string | undefined {
    if (i >= this.input.length) return undefined;
    return String.fromCodePoint(this.input.codePointAt(i)!);
  }

  scan(): Token {
    let c = this.charAt(this.pos);
    while (c !== undefined && isSpace(c)) {
      this.pos += c.length;
      c = this.charAt(this.pos);
    }
    const start = this.pos;
    if (c === undefined) return { kind: "eof", pos: start, text: "" };
    this.pos += c.length;
    if (c === "\0") return { kind: "illegal", pos: start, text: c, problem: "unexpected null" };
    if (/^[\ud800-\udfff]$/.test(c)) return { kind: "illegal", pos: start, text: c, problem: "invalid character" };
    if (QUOTES.has(c)) return this.scanQuoted(start, c);
    if (c === "," || c === ".") {
      this.expectValue = false;
      return { kind: "separator", pos: start, text: c };
    }
    if (OPERATOR_CHARS.has(c)) {
      this.consumeWhile((x) => OPERATOR_CHARS.has(x));
      this.expectValue = true;
      return { kind: "operator", pos: start, text: this.input.slice(start, this.pos) };
    }
    if (this.expectValue) {
      this.consumeWhile(isValueChar);
      this.expectValue = false;
      return { kind: "value", pos: start, text: this.input.slice(start, this.pos) };
    }
    if (isFieldChar(c)) {
      this.consumeWhile(isFieldChar);
      return { kind: "field", pos: start, text: this.input.slice(start, this.pos) };
    }
    return { kind: "char", pos: start, text: c };
  }

  private consumeWhile(ok: (c: string) => boolean): void {
    for (let c = this.charAt(this.pos); c !== undefined && ok(c); c = this.charAt(this.pos)) this.pos += c.length;
  }

  /** Reads a quoted string with Go's escapes, decoding it (escapes may spell UTF-8 bytes). */
  private scanQuoted(start: number, quote: string): Token {
    const bytes: number[] = [];
    const illegal = (problem: string): Token => ({ kind: "illegal", pos: start, text: this.input.slice(start, this.pos), problem });
    const encoder = new TextEncoder();
    for (;;) {
      const c = this.charAt(this.pos);
      if (c === undefined || c === "\n") return illegal("quoted literal not terminated");
      this.pos += c.length;
      if (c === "\0") return illegal("unexpected null");
      if (c === quote) break;
      if (c !== "\\") {
        bytes.push(...encoder.encode(c));
        continue;
      }
      const e = this.charAt(this.pos);
      if (e === undefined) return illegal("quoted literal not terminated");
      this.pos += e.length;
      if (Object.hasOwn(QUOTE_ESCAPES, e)) {
        bytes.push(QUOTE_ESCAPES[e]);
      } else if (e === quote) {
        bytes.push(quote.charCodeAt(0));
      } else if (/^[0-7]$/.test(e)) {
        const digits = e + this.input.slice(this.pos, this.pos + 2);
        if (!/^[0-7]{3}$/.test(digits)) return illegal("illegal numeric escape sequence");
        this.pos += 2;
        const v = parseInt(digits, 8);
        if (v > 255) return illegal("octal escape value greater than 255");
        bytes.push(v);
      } else if (e === "x" || e === "u" || e === "U") {
        const n = e === "x" ? 2 : e === "u" ? 4 : 8;
        const digits = this.input.slice(this.pos, this.pos + n);
        if (!new RegExp(`^[0-9A-Fa-f]{${n}}$`).test(digits)) return illegal("illegal numeric escape sequence");
        this.pos += n;
        const v = parseInt(digits, 16);
        if (e === "x") {
          bytes.push(v);
        } else {
          if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return illegal("escape is not a valid Unicode code point");
          bytes.push(...encoder.encode(String.fromCodePoint(v)));
        }
      } else {
        return illegal("illegal escape sequence");
      }
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
    } catch {
      return illegal("quoted string is not valid UTF-8");
    }
    return { kind: "quoted", pos: start, text, quote };
  }
}


/** A recursive-descent parser over one filter string, shaped like containerd's. */
class Parser {
  private readonly scanner: Scanner;

  constructor(
    private readonly input: string,
    /** Bytes of `~=` expressions the request may still hold (MAX_REGEXP_BYTES). */
    private readonly budget: { left: number },
  ) {
    this.scanner = new Scanner(input);
  }

  /**
   * containerd's parse error, word for word: `filters: parse error: [<before> >|<char>|< <after>]:
   * <problem>` (or `[<input>]: <problem>` at the end), with its ParseAll's `: invalid argument`.
   * (containerd cuts one byte at the position; here one character.)
   */
  private error(pos: number, problem: string): CkError {
    const at = this.input.codePointAt(pos);
    if (at === undefined) return invalidArgument(`filters: parse error: [${this.input}]: ${problem}`);
    const c = String.fromCodePoint(at);
    return invalidArgument(`filters: parse error: [${this.input.slice(0, pos)} >|${c}|< ${this.input.slice(pos + c.length)}]: ${problem}`);
  }

  parse(): Selector[] {
    if (this.input === "") return [];
    const out = [this.selector()];
    for (;;) {
      const c = this.scanner.peekChar();
      if (c === undefined) return out;
      if (c !== ",") throw this.error(this.scanner.offset, `unexpected input: ${c}`);
      this.scanner.scan();
      out.push(this.selector());
    }
  }

  private selector(): Selector {
    const fieldpath = this.fieldpath();
    const next = this.scanner.peekChar();
    if (next === undefined || next === ",") return freeze({ fieldpath, operator: "present", value: "" });
    const operator = this.operator();
    const token = this.scanner.scan();
    let value: string;
    switch (token.kind) {
      case "value":
      case "field":
        value = token.text;
        break;
      case "quoted":
        if (token.quote !== '"' && operator !== "~=") {
          // (/.../ and |...| are for "~=" only.)
          throw this.error(token.pos, "invalid quote encountered");
        }
        value = token.text;
        break;
      case "illegal":
        throw this.error(token.pos, token.problem!);
      default:
        throw this.error(token.pos, "expected value or quoted");
    }
    if (operator !== "~=") return freeze({ fieldpath, operator, value });
    this.budget.left -= Buffer.byteLength(value);
    if (this.budget.left < 0) {
      throw invalidArgument(`filters: ~= expressions of more than ${MAX_REGEXP_BYTES} bytes in all are refused (the one of ${fieldpath.join(".")} at offset ${token.pos} crosses it)`);
    }
    let pattern: Pattern;
    try {
      pattern = compileGoRegexp(value);
    } catch (err) {
      throw this.error(token.pos, `invalid regular expression ${JSON.stringify(value)}: ${(err as Error).message}`);
    }
    return freeze({ fieldpath, operator, value, pattern });
  }

  private fieldpath(): string[] {
    const fp = [this.field()];
    while (this.scanner.peekChar() === ".") {
      this.scanner.scan();
      fp.push(this.field());
    }
    return fp;
  }

  private field(): string {
    const token = this.scanner.scan();
    switch (token.kind) {
      case "field":
        return token.text;
      case "quoted":
        // (A field is quoted with " only.)
        if (token.quote !== '"') throw this.error(token.pos, "invalid quote encountered");
        return token.text;
      case "illegal":
        throw this.error(token.pos, token.problem!);
      default:
        throw this.error(token.pos, "expected field or quoted");
    }
  }

  private operator(): Operator {
    const token = this.scanner.scan();
    switch (token.kind) {
      case "operator":
        if (token.text === "==" || token.text === "!=" || token.text === "~=") return token.text;
        throw this.error(token.pos, `unsupported operator ${JSON.stringify(token.text)}`);
      case "illegal":
        throw this.error(token.pos, token.problem!);
      default:
        throw this.error(token.pos, `expected an operator ("=="|"!="|"~=")`);
    }
  }
}

function freeze(s: Selector): Selector {
  Object.freeze(s.fieldpath);
  return Object.freeze(s);
}

// ---- Go RE2 expressions ----

/**
 * re2js, loaded on the first `~=` expression (its CommonJS build, synchronously): ~10-20 ms of
 * module loading a ckd or ck-replay that never meets one does not pay at start.
 */
let re2jsClass: typeof RE2JSClass | undefined;
function re2js(): typeof RE2JSClass {
  return (re2jsClass ??= (createRequire(import.meta.url)("re2js") as { RE2JS: typeof RE2JSClass }).RE2JS);
}

/** A compiled `~=` expression. */
export interface Pattern {
  /** Whether the expression matches anywhere in `s` (Go's MatchString). */
  test(s: string): boolean;
}

/**
 * Compiles a Go regular expression (RE2 syntax) as Go's regexp.Compile does: the same
 * matches, and the same errors for what it refuses, in Go's words (`error parsing regexp:
 * missing closing ): ...`). Matching takes time linear in the input, as in containerd: a
 * filter such as `name~=^(a+)+$` cannot hold ckd's thread (a JavaScript RegExp backtracks,
 * ~10 s for one name of 29 characters). re2js is a port of RE2 (through RE2/J, itself a port of
 * Go's package).
 */
export function compileGoRegexp(src: string): Pattern {
  return re2js().compile(src);
}
