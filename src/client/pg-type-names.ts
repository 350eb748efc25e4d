/**
 * Names of PostgreSQL's built-in types by OID, as `format_type(oid, NULL)` prints them (the names
 * `psql \gdesc` shows). Built-in OIDs are fixed in pg_type.dat and stable across versions (this
 * list: PostgreSQL 15, base/range/multirange/pseudo types and their arrays). Types created in a
 * database (enums, extension types such as citext, their arrays) have OIDs >= 16384 that differ
 * per database: `hoopctl exec` asks the target for those (sql-exec.ts, typeNames).
 */
const BUILTIN =
  '16:boolean,17:bytea,18:"char",19:name,20:bigint,21:smallint,22:int2vector,23:integer,24:regproc,25:text,' +
  '26:oid,27:tid,28:xid,29:cid,30:oidvector,114:json,142:xml,143:xml[],199:json[],269:table_am_handler,' +
  '271:xid8[],325:index_am_handler,600:point,601:lseg,602:path,603:box,604:polygon,628:line,629:line[],650:cidr,' +
  '651:cidr[],700:real,701:double precision,705:unknown,718:circle,719:circle[],774:macaddr8,775:macaddr8[],' +
  '790:money,791:money[],829:macaddr,869:inet,1000:boolean[],1001:bytea[],1002:"char"[],1003:name[],' +
  '1005:smallint[],1006:int2vector[],1007:integer[],1008:regproc[],1009:text[],1010:tid[],1011:xid[],1012:cid[],' +
  '1013:oidvector[],1014:character[],1015:character varying[],1016:bigint[],1017:point[],1018:lseg[],1019:path[],' +
  '1020:box[],1021:real[],1022:double precision[],1027:polygon[],1028:oid[],1033:aclitem,1034:aclitem[],' +
  '1040:macaddr[],1041:inet[],1042:character,1043:character varying,1082:date,1083:time without time zone,' +
  '1114:timestamp without time zone,1115:timestamp without time zone[],1182:date[],1183:time without time zone[],' +
  '1184:timestamp with time zone,1185:timestamp with time zone[],1186:interval,1187:interval[],1231:numeric[],' +
  '1263:cstring[],1266:time with time zone,1270:time with time zone[],1560:bit,1561:bit[],1562:bit varying,' +
  '1563:bit varying[],1700:numeric,1790:refcursor,2201:refcursor[],2202:regprocedure,2203:regoper,' +
  '2204:regoperator,2205:regclass,2206:regtype,2207:regprocedure[],2208:regoper[],2209:regoperator[],' +
  '2210:regclass[],2211:regtype[],2249:record,2275:cstring,2276:"any",2277:anyarray,2278:void,2279:trigger,' +
  '2280:language_handler,2281:internal,2283:anyelement,2287:record[],2776:anynonarray,2949:txid_snapshot[],' +
  '2950:uuid,2951:uuid[],2970:txid_snapshot,3115:fdw_handler,3310:tsm_handler,3500:anyenum,3614:tsvector,' +
  '3615:tsquery,3642:gtsvector,3643:tsvector[],3644:gtsvector[],3645:tsquery[],3734:regconfig,3735:regconfig[],' +
  '3769:regdictionary,3770:regdictionary[],3802:jsonb,3807:jsonb[],3831:anyrange,3838:event_trigger,' +
  '3904:int4range,3905:int4range[],3906:numrange,3907:numrange[],3908:tsrange,3909:tsrange[],3910:tstzrange,' +
  '3911:tstzrange[],3912:daterange,3913:daterange[],3926:int8range,3927:int8range[],4072:jsonpath,' +
  '4073:jsonpath[],4089:regnamespace,4090:regnamespace[],4096:regrole,4097:regrole[],4191:regcollation,' +
  '4192:regcollation[],4451:int4multirange,4532:nummultirange,4533:tsmultirange,4534:tstzmultirange,' +
  '4535:datemultirange,4536:int8multirange,4537:anymultirange,4538:anycompatiblemultirange,5069:xid8,' +
  '5077:anycompatible,5078:anycompatiblearray,5079:anycompatiblenonarray,5080:anycompatiblerange,' +
  '6150:int4multirange[],6151:nummultirange[],6152:tsmultirange[],6153:tstzmultirange[],6155:datemultirange[],' +
  '6157:int8multirange[],';

let table: Map<number, string> | undefined;

/** the built-in type's name, or undefined for a type created in the database */
export function builtinTypeName(oid: number): string | undefined {
  if (!table) {
    table = new Map();
    for (const pair of BUILTIN.split(',')) {
      if (!pair) continue;
      const i = pair.indexOf(':');
      table.set(Number(pair.slice(0, i)), pair.slice(i + 1));
    }
  }
  return table.get(oid);
}
