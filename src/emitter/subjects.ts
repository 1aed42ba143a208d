// The mapping between a containerd event's (namespace, topic) and the NATS subject it is
// stored under, one-to-one in both directions.
//
// Rule: subject = `containerd.io.<namespace token>.<topic tokens>`.
//  - A namespace is one subject token: every `.` in it is written as `~`. A valid namespace
//    is a containerd identifier (`[A-Za-z0-9]` runs joined by `.`, `_` or `-`), so it never
//    contains `~`, `*`, `>` or whitespace, and `~` is legal in a NATS subject: the escape is
//    reversible and the token never acts as a wildcard. `k8s.io` -> `k8s~io`.
//  - A topic `/a/b/c` becomes the tokens `a.b.c`. Each topic component is an identifier too
//    (containerd's events exchange requires it), so it may also contain `.`; it is escaped the
//    same way: `/images/create` -> `images.create`, `/x/v1.2` -> `x.v1~2`.
// So one namespace is `containerd.io.<tok>.>` and one kind everywhere `containerd.io.*.images.>`.
import { invalidArgument } from "../errdefs/errdefs.js";
import { identifierProblem, validateIdentifier } from "../commands/validation.js";

const PREFIX = "containerd.io";
/** What the one JetStream stream holds. */
export const STREAM_SUBJECTS = `${PREFIX}.>`;

const escapeToken = (s: string) => s.replaceAll(".", "~");
const unescapeToken = (t: string) => t.replaceAll("~", ".");
const quote = (s: string) => JSON.stringify(s);

/** Why containerd's events exchange would refuse `topic`, or undefined if it accepts it. */
function topicProblem(topic: string): string | undefined {
  if (topic === "") return "must not be empty";
  if (!topic.startsWith("/")) return "must start with '/'";
  if (topic.length === 1) return "must have at least one component";
  for (const component of topic.slice(1).split("/")) {
    const problem = identifierProblem(component);
    if (problem !== undefined) return `failed validation on component ${quote(component)}: ${problem}`;
  }
  return undefined;
}

/**
 * Throws InvalidArgument unless `topic` is one containerd's events exchange accepts: `/`
 * followed by `/`-separated identifiers. That already excludes `*`, `>` and whitespace.
 */
export function validateTopic(topic: string): void {
  const problem = topicProblem(topic);
  if (problem !== undefined) throw invalidArgument(`topic ${quote(topic)}: ${problem}`);
}

/** The single subject token for a namespace; throws InvalidArgument for an invalid namespace. */
export function namespaceToken(namespace: string): string {
  validateIdentifier("namespace", namespace);
  return escapeToken(namespace);
}

/** The subject an event of `topic` in `namespace` is stored under. */
export function subjectFor(namespace: string, topic: string): string {
  validateTopic(topic);
  const tokens = topic.slice(1).split("/").map(escapeToken);
  return [PREFIX, namespaceToken(namespace), ...tokens].join(".");
}

/** Every event of one namespace. */
export function namespaceSubjectFilter(namespace: string): string {
  return `${PREFIX}.${namespaceToken(namespace)}.>`;
}

/** The inverse of subjectFor; throws InvalidArgument for a subject it could not have produced. */
export function parseSubject(subject: string): { namespace: string; topic: string } {
  const fail = (why: string) => invalidArgument(`subject ${quote(subject)}: ${why}`);
  if (!subject.startsWith(`${PREFIX}.`)) throw fail(`not under ${STREAM_SUBJECTS}`);
  const [nsToken, ...topicTokens] = subject.slice(PREFIX.length + 1).split(".");
  if (topicTokens.length === 0) throw fail("expected a namespace token and at least one topic token");
  const namespace = unescapeToken(nsToken);
  const topic = "/" + topicTokens.map(unescapeToken).join("/");
  const nsProblem = identifierProblem(namespace);
  if (nsProblem !== undefined) throw fail(`namespace: ${nsProblem}`);
  const topicWhy = topicProblem(topic);
  if (topicWhy !== undefined) throw fail(`topic ${quote(topic)}: ${topicWhy}`);
  return { namespace, topic };
}
