/**
 * Column rules: the whole value of a matching column is sensitive, so nothing of it survives
 * except what keeps the client's parser happy.
 *
 * - text-like types (text, varchar, bpchar, name, "char", unknown): every character becomes `*`
 *   except whitespace and the separators `@ . -`, so `alice@example.com` → `*****@*******.***`
 *   and `123-45-6789` → `***-**-****` (length and layout kept, content gone).
 * - json / jsonb: the JSON string `"****"` (always valid JSON, no structure or keys leaked).
 * - uuid: the nil uuid `00000000-0000-0000-0000-000000000000` (still parses as a uuid).
 * - everything else (numbers, dates, bytea, arrays, user-defined/unknown types): NULL, because
 *   no masked text would parse as that type and NULL always does.
 */
import { PgType, isTextLike } from './pg-types.ts';

const MASKABLE = /[^\s@.-]/gu;
export const JSON_MASK = '"****"';
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/** Masks free text character by character (one `*` per code point), keeping whitespace and `@ . -`. */
export function maskChars(value: string): string {
  return value.replace(MASKABLE, '*');
}

export function maskWholeValue(value: string, typeOid: number): string | null {
  if (isTextLike(typeOid)) return maskChars(value);
  if (typeOid === PgType.json || typeOid === PgType.jsonb) return JSON_MASK;
  if (typeOid === PgType.uuid) return NIL_UUID;
  return null;
}
