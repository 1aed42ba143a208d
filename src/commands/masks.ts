// Field-mask application shared by the aggregates: `labels` replaces the whole map,
// `labels.<key>` sets one key (an empty value removes it), as containerd's stores do.

/**
 * Applies the mask paths under one map field (`field`, e.g. "labels") and returns the new map.
 * Paths for other fields are ignored here; callers validate paths before.
 */
export function applyLabelMask(
  current: Record<string, string>,
  requested: Record<string, string>,
  paths: string[],
  field: string,
): Record<string, string> {
  let out: Record<string, string> = { ...current };
  for (const p of paths) {
    if (p === field) {
      out = {};
      for (const [k, v] of Object.entries(requested)) if (v !== "") out[k] = v;
    } else if (p.startsWith(`${field}.`)) {
      const key = p.slice(field.length + 1);
      // Own keys only: a path naming an absent "constructor" must not find Object's.
      const v = Object.hasOwn(requested, key) ? requested[key] : undefined;
      if (v === undefined || v === "") delete out[key];
      else out[key] = v;
    }
  }
  return out;
}

/**
 * The labels an update under `paths` writes, each with the value it is given ("" for a named
 * key the request lacks: a removal): what containerd validates, as it validates the info that
 * results from the mask. Labels the request carries but the mask does not name are never
 * applied, so they are not checked either. No paths (or the whole field) writes the request.
 */
export function maskedLabels(requested: Record<string, string>, paths: string[], field: string): Record<string, string> {
  if (paths.length === 0 || paths.includes(field)) return requested;
  const out: Record<string, string> = {};
  for (const p of paths) {
    if (!p.startsWith(`${field}.`)) continue;
    const key = p.slice(field.length + 1);
    out[key] = Object.hasOwn(requested, key) ? requested[key]! : "";
  }
  return out;
}

/** Same rule for maps of arbitrary values (container extensions). */
export function applyMapMask<V>(
  current: Record<string, V>,
  requested: Record<string, V>,
  paths: string[],
  field: string,
): Record<string, V> {
  let out: Record<string, V> = { ...current };
  for (const p of paths) {
    if (p === field) out = { ...requested };
    else if (p.startsWith(`${field}.`)) {
      const key = p.slice(field.length + 1);
      if (Object.hasOwn(requested, key)) out[key] = requested[key]!;
      else delete out[key];
    }
  }
  return out;
}

/** Labels as containerd stores them: an empty value is no label. */
export function dropEmpty(labels: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})) if (v !== "") out[k] = v;
  return out;
}
