/**
 * How masking treats each PostgreSQL type (OIDs from pg_type.dat, stable across versions).
 * User-defined types (citext, enums, domains, composites) have OIDs >= 16384 that differ per
 * database, so they are "unknown" here.
 */

export const PgType = {
  bool: 16, bytea: 17, char: 18, name: 19, int8: 20, int2: 21, int4: 23, text: 25, oid: 26,
  json: 114, xml: 142, point: 600, cidr: 650, float4: 700, float8: 701, unknown: 705,
  macaddr: 829, inet: 869, bpchar: 1042, varchar: 1043, date: 1082, time: 1083,
  timestamp: 1114, timestamptz: 1184, interval: 1186, timetz: 1266, numeric: 1700,
  money: 790, uuid: 2950, jsonb: 3802, macaddr8: 774,
  // arrays
  textArray: 1009, varcharArray: 1015, bpcharArray: 1014, nameArray: 1003,
  jsonArray: 199, jsonbArray: 3807, int8Array: 1016, int4Array: 1007, int2Array: 1005,
  numericArray: 1231, float4Array: 1021, float8Array: 1022, inetArray: 1041, cidrArray: 651,
  uuidArray: 2951, moneyArray: 791, byteaArray: 1001,
} as const;

/** Types whose text form is free text: a column rule masks them character by character. */
const TEXT_LIKE = new Set<number>([PgType.text, PgType.varchar, PgType.bpchar, PgType.name, PgType.char, PgType.unknown]);

/**
 * Types whose text form cannot carry any detector's match (fixed syntax: numbers of at most
 * 10 digits, dates, uuids, ...). Content masking skips them, which keeps int/timestamp-heavy
 * results fast and guarantees their values are never turned into something unparsable.
 */
const NEVER_MATCH = new Set<number>([
  PgType.bool, PgType.int2, PgType.int4, PgType.oid, PgType.date, PgType.time, PgType.timetz,
  PgType.timestamp, PgType.timestamptz, PgType.interval, PgType.uuid, PgType.point,
  PgType.int2Array, PgType.int4Array, PgType.uuidArray,
]);

/**
 * Types with a strict syntax that a detector *can* match (a card number stored as int8 or
 * numeric, an address in inet): a masked form like `****1111` would not parse, so a value a
 * detector changed becomes NULL instead.
 */
const NULL_IF_MATCHED = new Set<number>([
  PgType.int8, PgType.numeric, PgType.float4, PgType.float8, PgType.money, PgType.inet, PgType.cidr,
  PgType.macaddr, PgType.macaddr8, PgType.int8Array, PgType.numericArray, PgType.float4Array,
  PgType.float8Array, PgType.inetArray, PgType.cidrArray, PgType.moneyArray, PgType.jsonArray,
  PgType.jsonbArray, PgType.xml, PgType.byteaArray,
]);

export const TypeClass = {
  /** mask the text in place (text, varchar, text[], user-defined and unknown types) */
  text: 0,
  /** skip detectors entirely */
  skip: 1,
  /** NULL when a detector matched */
  nullIfMatched: 2,
  /** walk JSON tokens so the result stays valid JSON */
  json: 3,
  /** decode the bytea text form and NULL it when the decoded bytes hold a match */
  bytea: 4,
} as const;
export type TypeClass = (typeof TypeClass)[keyof typeof TypeClass];

export function classifyType(oid: number): TypeClass {
  if (oid === PgType.json || oid === PgType.jsonb) return TypeClass.json;
  if (oid === PgType.bytea) return TypeClass.bytea;
  if (NEVER_MATCH.has(oid)) return TypeClass.skip;
  if (NULL_IF_MATCHED.has(oid)) return TypeClass.nullIfMatched;
  return TypeClass.text;
}

export function isTextLike(oid: number): boolean {
  return TEXT_LIKE.has(oid);
}
