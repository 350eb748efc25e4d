/** Masking policy: the public API the engines code against (see README.md). */
export {
  type CompiledMasking, type MaskCounter, ByteScreen, compileMasking, columnMatches, contentMayMatch, maskContent, maskValue, maskCell, maskText,
  maskTaintedText, maskParameterStatus,
} from './masking.ts';
export { maskWholeValue } from './whole-value.ts';
export { type CopyTextOptions, type CopyCsvOptions, maskCopyLine, maskCsvLine } from './copy.ts';
export { PgType } from './pg-types.ts';
